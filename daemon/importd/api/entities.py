"""Handlers for entities and runs: gaps, unmatched, conflicts, resolve, runs, run and cancel."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, cast

from sqlmodel.ext.asyncio.session import AsyncSession

from importctl.protocol import (
    CONFLICT_STATUSES,
    DEFAULT_CONFLICT_STATUS,
    DEFAULT_RUN_LOG_LIMIT,
    DEFAULT_RUNS_LIMIT,
    DEFAULT_UNMATCHED_LIMIT,
    MAX_RUN_LOG_LIMIT,
    MAX_RUNS_LIMIT,
    MAX_UNMATCHED_LIMIT,
    RESOLVE_ACTIONS,
    CancelReply,
    Completeness,
    ConflictReply,
    ErrorCode,
    GapsReply,
    ResolveReply,
    RunDetailReply,
    RunReply,
    UnmatchedFile,
    UnmatchedReply,
    iso_utc,
)
from importd.api.server import ApiError, Params
from importd.catalog import runs as catalog_runs
from importd.catalog.entities import ResolveError, conflict_rows, orphan_folders, unmatched_by_folder
from importd.catalog.roots import root_paths
from importd.core import Core
from importd.entities import GapReport, fold
from importd.paths import wire


async def gaps(core: Core, params: Params) -> GapsReply:
    entity_type, name = params.get("type"), params.get("entity")
    run_id = params.get("run")
    if run_id is not None:
        async with AsyncSession(core.engine) as session:
            row, _ = await catalog_runs.run_row(session, run_id, 0)
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no run {run_id}")
        if not row["gap_report"]:
            raise ApiError(ErrorCode.NOT_FOUND, f"run {run_id} has no stored gap report (still running?)")
        stored = cast(GapsReply, json.loads(row["gap_report"]))
        return _narrow(stored, entity_type, name)
    if params.get("site"):  # every server's files: read afresh (the live report is this server's)
        report = await core.recomputed_gap_report(site=True)
    elif params.get("recompute"):
        report = await core.recomputed_gap_report()
    else:
        report = core.gap_report()
    report = report.only(entity_type=entity_type, name=name)
    out = cast(GapsReply, report.to_json())
    if entity_type is not None or name is not None:
        out["completeness"] = cast(Completeness, report.completeness.to_json())
    if report.orphaned:
        await _orphan_paths(core, report, out)
    return out


async def _orphan_paths(core: Core, report: GapReport, out: GapsReply) -> None:
    """Where each orphaned entity's files were: the folder `importctl forget` settles."""
    refs = [(e.type, e.key) for e in report.orphaned]
    async with core.engine.connect() as conn:
        folders = await conn.run_sync(orphan_folders, refs)
    roots = {root.root_id: root.raw_path for root in core.roots()}
    for item, ref in zip(out.get("orphaned", []), refs, strict=True):
        where = folders.get(ref)
        if where is not None and where[0] in roots and where[1]:
            item["path"] = wire(roots[where[0]] + b"/" + where[1])


def _narrow(report: GapsReply, entity_type: str | None, name: str | None) -> GapsReply:
    """A stored report, narrowed as `only` narrows the live one (its completeness stays whole)."""
    if entity_type is None and name is None:
        return report
    wanted = fold(name) if name is not None else None
    out = report.copy()
    out["entities"] = [
        e
        for e in report["entities"]
        if (entity_type is None or e["type"] == entity_type) and (wanted is None or fold(e["name"]) == wanted)
    ]
    return out


async def unmatched(core: Core, params: Params) -> UnmatchedReply:
    names = await _root_names(core)
    root_id = None
    if params.get("root"):
        ids = {name: rid for rid, name in names.items()}
        if params["root"] not in ids:
            raise ApiError(ErrorCode.NOT_FOUND, f"no root named {params['root']!r}")
        root_id = ids[params["root"]]
    limit = max(1, min(int(params.get("limit", DEFAULT_UNMATCHED_LIMIT)), MAX_UNMATCHED_LIMIT))
    async with AsyncSession(core.engine) as session:
        every = await unmatched_by_folder(session, root_id)
    roots = {root.root_id: root.raw_path for root in core.roots()}
    by_folder: Counter[str] = Counter()
    files: list[UnmatchedFile] = []
    for rid, rel in every:
        folder = rel.rsplit(b"/", 1)[0] if b"/" in rel else b""
        by_folder[f"{names.get(rid, '?')}:{wire(folder) or '.'}"] += 1
        if len(files) < limit:
            base = roots.get(rid)
            files.append(
                {
                    "path": wire(base + b"/" + rel) if base else wire(rel),
                    "root": names.get(rid, "?"),
                    "relpath": wire(rel),
                }
            )
    return {
        "files": files,
        "total": len(every),
        "by_folder": dict(sorted(by_folder.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


async def conflicts(core: Core, params: Params) -> list[ConflictReply]:
    status = params.get("status", DEFAULT_CONFLICT_STATUS)
    if status not in CONFLICT_STATUSES:
        raise ApiError(ErrorCode.INVALID, f"status must be one of {', '.join(CONFLICT_STATUSES)}")
    async with AsyncSession(core.engine) as session:
        rows = await conflict_rows(session, None if status == "all" else status)
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "entity": r["entity_name"],
            "type": r["entity_type"],
            "other": r["other_name"],
            "attribute": r["attribute"],
            "current": json.loads(r["current"]),
            "proposed": json.loads(r["proposed"]),
            "source": r["source"],
            "status": r["status"],
            "created": iso_utc(r["created"]),
            "resolved": iso_utc(r["resolved"]),
        }
        for r in rows
    ]


async def resolve(core: Core, params: Params) -> ResolveReply:
    action = params["action"]
    if action not in RESOLVE_ACTIONS:
        raise ApiError(ErrorCode.INVALID, f"action must be one of {', '.join(RESOLVE_ACTIONS)}")
    conflict_id = params["conflict_id"]
    done = await core.resolve_conflict(conflict_id, action)
    if isinstance(done, ResolveError):
        raise ApiError(ErrorCode(done.code), done.message)
    return {
        "id": conflict_id,
        "entity": done.entity.name,
        "attribute": done.attribute,
        "value": done.value,
        "status": done.status,
    }


async def runs(core: Core, params: Params) -> list[RunReply]:
    limit = max(1, min(int(params.get("limit", DEFAULT_RUNS_LIMIT)), MAX_RUNS_LIMIT))
    async with AsyncSession(core.engine) as session:
        rows = await catalog_runs.run_rows(session, limit)
    names = await _root_names(core)
    live = core.live_runs()
    out = []
    for row in rows:
        item = run_reply(row, names)
        scan = live.get(row["id"])
        if scan is not None and row["status"] == "running":
            # The row is written when the run ends; the scan in memory is ahead of it.
            item["status"] = scan["state"]
            item["counts"].update(
                {
                    "files_seen": scan["files_seen"],
                    "changed": scan["changed"],
                    "files_registered": scan["files_registered"],
                    "entities_created": scan["entities_created"],
                    "entities_updated": scan["entities_updated"],
                    "duplicates": scan["duplicates"],
                    "errors": scan["errors"],
                }
            )
        out.append(item)
    return out


async def run(core: Core, params: Params) -> RunDetailReply:
    log_limit = max(0, min(int(params.get("log_limit", DEFAULT_RUN_LOG_LIMIT)), MAX_RUN_LOG_LIMIT))
    async with AsyncSession(core.engine) as session:
        row, logs = await catalog_runs.run_row(session, params["run_id"], log_limit)
    if row is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no run {params['run_id']}")
    item = run_reply(row, await _root_names(core))
    return {
        **item,
        "log": [
            {"entity": e["entity"], "action": e["action"], "detail": e["detail"], "at": iso_utc(e["at"])}
            for e in logs
        ],
    }


async def cancel(core: Core, params: Params) -> CancelReply:
    wanted = params["run_id"]
    outcome = core.cancel(wanted)
    if not outcome.found:
        raise ApiError(ErrorCode.NOT_FOUND, f"no running run {wanted} (see importctl runs)")
    if not outcome.cancelled:
        raise ApiError(ErrorCode.INVALID, f"run {wanted} already ended ({outcome.state})")
    return {"id": wanted, "status": "cancelled"}


def run_reply(row: dict[str, Any], root_names: dict[int, str]) -> RunReply:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "trigger": row["trigger"],
        "root": root_names.get(row["root_id"]) if row["root_id"] is not None else None,
        "path": row["target"],
        "status": row["status"],
        "started": iso_utc(row["started"]),
        "finished": iso_utc(row["finished"]),
        "counts": {
            "files_seen": row["files_seen"],
            "changed": row["changed"],
            "files_registered": row["files_registered"],
            "vanished": row["vanished"],
            "entities_created": row["entities_created"],
            "entities_updated": row["entities_updated"],
            "duplicates": row["duplicates"],
            "errors": row["errors"],
        },
        "detail": row["detail"],
    }


async def _root_names(core: Core) -> dict[int, str]:
    """Every root the catalog knows (runs of a root no longer configured keep its name)."""
    async with core.engine.connect() as conn:
        roots = await conn.run_sync(root_paths)
    return {rid: name for rid, (name, _, _) in roots.items()}
