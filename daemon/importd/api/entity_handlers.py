"""Handlers for entities, gaps, conflicts and runs (part of the one {method: handler} table)."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from importctl.protocol import RESOLVE_ACTIONS, ErrorCode, Method
from importd.api.server import ApiError, Handler
from importd.api.wire import iso
from importd.catalog import runs as catalog_runs
from importd.catalog.entities import (
    ResolveError,
    conflict_rows,
    load_states,
    resolve_conflict_tx,
    unmatched_by_folder,
)
from importd.catalog.roots import root_paths
from importd.entities import AttributeSet, compute_report
from importd.paths import wire

if TYPE_CHECKING:
    from importd.service import Service


def run_to_wire(row: dict[str, Any], root_names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "trigger": row["trigger"],
        "root": root_names.get(row["root_id"]) if row["root_id"] is not None else None,
        "path": row["target"],
        "status": row["status"],
        "started": iso(row["started"]),
        "finished": iso(row["finished"]),
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


def build_entity_handlers(service: Service) -> dict[str, Handler]:
    pipeline = service.pipeline
    mapper = pipeline.mapper

    async def root_names() -> dict[int, str]:
        async with service.engine.connect() as conn:
            roots = await conn.run_sync(root_paths)
        return {rid: name for rid, (name, _, _) in roots.items()}

    async def gaps(params: dict[str, Any]) -> dict[str, Any]:
        run_id = params.get("run")
        if run_id is not None:
            async with AsyncSession(service.engine) as session:
                row, _ = await catalog_runs.run_row(session, run_id, 0)
            if row is None:
                raise ApiError(ErrorCode.NOT_FOUND, f"no run {run_id}")
            if not row["gap_report"]:
                raise ApiError(ErrorCode.NOT_FOUND, f"run {run_id} has no stored gap report (still running?)")
            stored: dict[str, Any] = json.loads(row["gap_report"])
            return _narrow(stored, params.get("type"), params.get("entity"))
        if params.get("recompute"):
            # The full recomputation from the catalog, to check the live report against.
            async with service.engine.connect() as conn:
                states = await conn.run_sync(load_states)
            report = compute_report(states, mapper.live.expectations)
        else:
            report = mapper.live.report()
        report = report.only(entity_type=params.get("type"), name=params.get("entity"))
        out = report.to_json()
        if params.get("type") is not None or params.get("entity") is not None:
            out["completeness"] = report.completeness.to_json()
        return out

    async def unmatched(params: dict[str, Any]) -> dict[str, Any]:
        names = await root_names()
        root_id = None
        if params.get("root"):
            ids = {name: rid for rid, name in names.items()}
            if params["root"] not in ids:
                raise ApiError(ErrorCode.NOT_FOUND, f"no root named {params['root']!r}")
            root_id = ids[params["root"]]
        limit = max(1, min(int(params.get("limit", 1000)), 1_000_000))
        async with AsyncSession(service.engine) as session:
            every = await unmatched_by_folder(session, root_id)
        roots = {rid: st.raw_path for rid, st in pipeline.roots.items()}
        by_folder: Counter[str] = Counter()
        files: list[dict[str, str]] = []
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

    async def conflicts(params: dict[str, Any]) -> list[dict[str, Any]]:
        status = params.get("status", "open")
        if status not in ("open", "kept", "taken", "all"):
            raise ApiError(ErrorCode.INVALID, "status must be open, kept, taken or all")
        async with AsyncSession(service.engine) as session:
            rows = await conflict_rows(session, None if status == "all" else status)
        return [
            {
                "id": r["id"],
                "entity": r["entity_name"],
                "type": r["entity_type"],
                "attribute": r["attribute"],
                "current": json.loads(r["current"]),
                "proposed": json.loads(r["proposed"]),
                "source": r["source"],
                "status": r["status"],
                "created": iso(r["created"]),
                "resolved": iso(r["resolved"]),
            }
            for r in rows
        ]

    async def resolve(params: dict[str, Any]) -> dict[str, Any]:
        action = params["action"]
        if action not in RESOLVE_ACTIONS:
            raise ApiError(ErrorCode.INVALID, f"action must be one of {', '.join(RESOLVE_ACTIONS)}")
        conflict_id = params["conflict_id"]
        now = pipeline.clock()
        try:
            done = await pipeline.writer.call(lambda c: resolve_conflict_tx(c, conflict_id, action, now))
        except ResolveError as exc:
            raise ApiError(ErrorCode(exc.code), exc.message) from None
        if done.applied:
            mapper._emit(mapper.live.apply(AttributeSet(done.entity, done.attribute, done.value)))
        return {
            "id": conflict_id,
            "entity": done.entity.name,
            "attribute": done.attribute,
            "value": done.value,
            "status": "taken" if done.applied else "kept",
        }

    async def runs(params: dict[str, Any]) -> list[dict[str, Any]]:
        limit = max(1, min(int(params.get("limit", 50)), 10_000))
        async with AsyncSession(service.engine) as session:
            rows = await catalog_runs.run_rows(session, limit)
        names = await root_names()
        live = {s.run_id: s for s in pipeline.scans.values() if s.run_id is not None}
        out = []
        for row in rows:
            item = run_to_wire(row, names)
            scan = live.get(row["id"])
            if scan is not None and row["status"] == "running":
                item["status"] = scan.state
                item["counts"].update(
                    files_seen=scan.files_seen,
                    changed=scan.changed,
                    files_registered=scan.files_registered,
                    entities_created=scan.entities_created,
                    entities_updated=scan.entities_updated,
                    duplicates=scan.duplicates,
                    errors=scan.errors,
                )
            out.append(item)
        return out

    async def run(params: dict[str, Any]) -> dict[str, Any]:
        log_limit = max(0, min(int(params.get("log_limit", 10_000)), 1_000_000))
        async with AsyncSession(service.engine) as session:
            row, logs = await catalog_runs.run_row(session, params["run_id"], log_limit)
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no run {params['run_id']}")
        item = run_to_wire(row, await root_names())
        item["log"] = [
            {
                "entity": entry["entity"],
                "action": entry["action"],
                "detail": entry["detail"],
                "at": iso(entry["at"]),
            }
            for entry in logs
        ]
        return item

    async def cancel(params: dict[str, Any]) -> dict[str, Any]:
        wanted = params["run_id"]
        scan = next((s for s in pipeline.scans.values() if s.run_id == wanted), None)
        if scan is None:
            # A queued scan has no run row yet: `importctl scan` printed its scan id.
            queued = pipeline.scans.get(wanted)
            scan = queued if queued is not None and queued.run_id is None else None
        if scan is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no running run {wanted} (see importctl runs)")
        if not pipeline.cancel_scan(scan):
            raise ApiError(ErrorCode.INVALID, f"run {wanted} already ended ({scan.state})")
        return {"id": wanted, "status": "cancelled"}

    return {
        Method.GAPS: gaps,
        Method.UNMATCHED: unmatched,
        Method.CONFLICTS: conflicts,
        Method.RESOLVE: resolve,
        Method.RUNS: runs,
        Method.RUN: run,
        Method.CANCEL: cancel,
    }


def _narrow(report: dict[str, Any], entity_type: str | None, name: str | None) -> dict[str, Any]:
    if entity_type is None and name is None:
        return report
    from importd.entities import fold

    wanted = fold(name) if name is not None else None
    out = dict(report)
    out["entities"] = [
        e
        for e in report["entities"]
        if (entity_type is None or e["type"] == entity_type) and (wanted is None or fold(e["name"]) == wanted)
    ]
    return out
