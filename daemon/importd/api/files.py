"""Handlers for files: status, scan, scan progress, find, errors and forget."""

from __future__ import annotations

import os
import re
from typing import Any

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from importctl.findings import shell_quote
from importctl.protocol import (
    DEFAULT_ERRORS_LIMIT,
    MAX_ERRORS_LIMIT,
    ErrorCode,
    ErrorReply,
    FileReply,
    FileTotals,
    ForgetReply,
    RootStatus,
    ScanReply,
    ScansReply,
    StatusReply,
    iso_utc,
)
from importd.api.server import ApiError, Params
from importd.api.site import own_root_ids, roots_by_id, site_status
from importd.catalog import files as catalog_files
from importd.catalog.entities import links_of_files
from importd.catalog.media import extraction_failures
from importd.catalog.models import STATUS_ERROR, STATUS_MISSING, STATUS_PRESENT
from importd.catalog.roots import SiteRoot
from importd.catalog.tags import tags_of_files
from importd.core import Core
from importd.paths import display, wire
from importd.targets import TargetError

HEX = re.compile(r"[0-9a-fA-F]{6,64}")
FIND_LIMIT = 1000


def target_error(error: TargetError) -> ApiError:
    return ApiError(ErrorCode(error.code), error.message)


async def status(core: Core, params: Params) -> StatusReply:
    async with core.engine.connect() as conn:
        counts = await conn.run_sync(catalog_files.status_counts)
    own = own_root_ids(core, await roots_by_id(core))
    totals: FileTotals = {"present": 0, "missing": 0, "error": 0}
    total_bytes = 0
    for rid, per_root in counts.items():
        if rid not in own:
            continue  # another server's

        for st, (n, b) in per_root.items():
            if st == STATUS_PRESENT:
                totals["present"] += n
                total_bytes += b
            elif st == STATUS_MISSING:
                totals["missing"] += n
            elif st == STATUS_ERROR:
                totals["error"] += n
    roots: list[RootStatus] = []
    warnings = []
    for root in core.roots():
        per_root = counts.get(root.root_id, {})
        roots.append(
            {
                "name": root.name,
                "path": root.path,
                "state": root.state,
                "files": per_root.get(STATUS_PRESENT, (0, 0))[0],
                "missing": per_root.get(STATUS_MISSING, (0, 0))[0],
                "errors": per_root.get(STATUS_ERROR, (0, 0))[0],
                "watch": root.watch,
                "watch_error": root.watch_error,
                "unreadable_dirs": len(root.walk_errors),
                "held": root.held,
            }
        )
        if root.watch_error:
            warnings.append(f"{root.name}: {root.watch_error}")
        if root.held:
            warnings.append(
                f"{root.name}: {root.held} files vanished at once and are held, not marked missing: "
                f"`importctl confirm-missing {root.name}` applies it; putting them back clears it"
            )
    warnings += core.stage_warnings()
    files_per_s, mib_per_s = core.rates()
    site = await site_status(core) if params.get("site") else None
    if site is not None:
        warnings += [
            f"{h['name']}: no heartbeat since {h['heartbeat']}"
            " (its importd is down, hung or cut off from the catalog)"
            for h in site["hosts"]
            if h["state"] == "silent"
        ]
    reply: StatusReply = {
        "version": core.version,
        "uptime_s": round(core.uptime_s(), 3),
        "pid": core.pid(),
        "catalog": core.catalog,
        "roots": roots,
        "files": totals,
        "bytes": total_bytes,
        "queue": core.queue(),
        "hashed_files_per_s": round(files_per_s, 2),
        "hashed_mib_per_s": round(mib_per_s, 2),
        "counters": core.counters(),
        "last_scan": core.last_scan(),
        "completeness": core.completeness(),
        "media": core.media_status(),
        "maintenance": await core.maintenance_status(),
        "warnings": warnings,
        "migration": core.migration_status(),
        "host": core.host,
    }
    if site is not None:
        reply["site"] = site
    return reply


async def scan(core: Core, params: Params) -> ScansReply:
    places = core.resolve(params.get("target"))
    if isinstance(places, TargetError):
        raise target_error(places)
    if not places:
        raise ApiError(ErrorCode.NOT_FOUND, "no roots are configured")
    return {"scans": await core.request_scans(places)}


async def scan_progress(core: Core, params: Params) -> ScanReply:
    found = core.scan(params["scan_id"])
    if found is None:
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no scan {params['scan_id']} (finished scans are kept for a while)"
        )
    return found


async def find(core: Core, params: Params) -> list[FileReply]:
    query: str = params["query"]
    forgotten = bool(params.get("all"))  # `--all`: forgotten rows too
    site = bool(params.get("site"))  # `--site`: every server's roots, not only this one's
    if not query:
        raise ApiError(ErrorCode.INVALID, "find needs a path or a BLAKE3 hash (or a prefix of one)")
    roots = await roots_by_id(core)
    within = None if site else own_root_ids(core, roots)
    if HEX.fullmatch(query) and not os.path.isabs(query) and not os.path.lexists(query):
        async with AsyncSession(core.engine) as session:
            rows = await catalog_files.find_hash(
                session, query, FIND_LIMIT, forgotten=forgotten, root_ids=within
            )
        if not rows:
            where = "" if site else f" on {core.host} (hint: importctl find --site looks on every server)"
            raise ApiError(ErrorCode.NOT_FOUND, f"no file with a BLAKE3 starting {query.lower()}{where}")
        return await file_replies(core, rows)
    if site and os.path.isabs(query):
        return await _find_on_site(core, roots, query, forgotten)
    place = core.locate(query, params.get("cwd"))
    if isinstance(place, TargetError):
        raise target_error(place)
    async with AsyncSession(core.engine) as session:
        rows = await catalog_files.find_path(
            session, place.root_id, place.relpath, FIND_LIMIT, forgotten=forgotten
        )
    if not rows and not forgotten:
        async with AsyncSession(core.engine) as session:
            if await catalog_files.find_path(session, place.root_id, place.relpath, 1):
                raise ApiError(
                    ErrorCode.NOT_FOUND,
                    f"only forgotten rows at {display(place.path)}"
                    f" (hint: importctl find --all {shell_quote(place.path)} shows them)",
                )
    if not rows:
        raise ApiError(ErrorCode.NOT_FOUND, f"nothing in the catalog at {display(place.path)}")
    return await file_replies(core, rows)


async def _find_on_site(
    core: Core, roots: dict[int, SiteRoot], query: str, forgotten: bool
) -> list[FileReply]:
    """An absolute path on any server: under each root (of any host) whose path holds it."""
    wanted = os.fsencode(os.path.normpath(query))
    rows: list[dict[str, Any]] = []
    async with AsyncSession(core.engine) as session:
        for rid, root in sorted(roots.items(), key=lambda kv: (kv[1].host, kv[1].name)):
            base = os.fsencode(root.path)
            if wanted == base:
                rel = b""
            elif wanted.startswith(base.rstrip(b"/") + b"/"):
                rel = wanted[len(base.rstrip(b"/")) + 1 :]
            else:
                continue
            rows += await catalog_files.find_path(
                session, rid, rel, FIND_LIMIT - len(rows), forgotten=forgotten
            )
            if len(rows) >= FIND_LIMIT:
                break
    if not rows:
        raise ApiError(ErrorCode.NOT_FOUND, f"nothing in the catalog at {query} on any server")
    return await file_replies(core, rows)


async def errors(core: Core, params: Params) -> list[ErrorReply]:
    limit = max(1, min(int(params.get("limit", DEFAULT_ERRORS_LIMIT)), MAX_ERRORS_LIMIT))
    own = own_root_ids(core, await roots_by_id(core))
    out: list[ErrorReply] = []
    condition = core.catalog_condition()
    if condition is not None:  # first: the one line that explains why nothing else moves
        why, since = condition
        out.append(
            {
                "kind": "catalog",
                "path": core.catalog,
                "root": "",
                "error": why,
                "since": iso_utc(since) if since is not None else None,
            }
        )
    async with AsyncSession(core.engine) as session:
        rows = await catalog_files.error_rows(session, limit, own)
    out += [
        {"kind": "file", "path": r["path"], "root": r["root"], "error": r["error"], "since": r["last_seen"]}
        for r in await file_replies(core, rows)
    ]
    async with core.engine.connect() as conn:
        failures = await conn.run_sync(extraction_failures, limit, sorted(own))
    roots = {root.root_id: root for root in core.roots()}
    for _digest, extractor, error, at, rid, rel in failures:
        of = roots.get(rid)
        out.append(
            {
                "kind": "extract",
                "path": wire(of.raw_path + b"/" + rel) if of else wire(rel),
                "root": of.name if of else "?",
                "error": f"{extractor}: {error}",
                "since": iso_utc(at),
            }
        )
    for root in roots.values():
        for err in root.walk_errors:
            out.append(
                {
                    "kind": "directory",
                    "path": wire(root.absolute(err.relpath)),
                    "root": root.name,
                    "error": err.reason,
                    "since": None,
                }
            )
        if root.watch_error:
            out.append(
                {
                    "kind": "root",
                    "path": root.path,
                    "root": root.name,
                    "error": root.watch_error,
                    "since": None,
                }
            )
    return out[:limit]


async def file_replies(core: Core, rows: list[dict[str, Any]]) -> list[FileReply]:
    """Catalog rows as `find` shows them (also `info`'s and `errors`' file rows)."""
    roots = await roots_by_id(core)
    async with AsyncSession(core.engine) as session:
        entities = await links_of_files(session, [r["id"] for r in rows])
    async with core.engine.connect() as conn:
        tags = await conn.run_sync(tags_of_files, [r["id"] for r in rows])
    out: list[FileReply] = []
    for r in rows:
        host, name, path, reconciled = roots.get(r["root_id"], SiteRoot("?", "?", "", None))
        last_seen = r["last_seen"]
        # A reconcile that found the file unchanged saw it then, without rewriting its row.
        if r["status"] == STATUS_PRESENT and reconciled and reconciled > last_seen:
            last_seen = reconciled
        entity = entities.get(r["id"])
        out.append(
            {
                "path": wire(os.fsencode(path) + b"/" + r["relpath"]),
                "root": name,
                "host": host,
                "relpath": wire(r["relpath"]),
                "size": r["size"],
                "blake3": r["blake3"],
                "status": r["status"],
                "first_seen": iso_utc(r["first_seen"]),
                "last_seen": iso_utc(last_seen),
                "missing_since": iso_utc(r["missing_since"]),
                "error": r["error"],
                "mtime_ns": r["mtime_ns"],
                "inode": r["inode"] % (1 << 64),
                "dev": r["dev"] % (1 << 64),
                "entity": {
                    "type": entity["type"],
                    "name": entity["name"],
                    "role": entity["role"],
                    "pre_approved": entity["pre_approved"],
                }
                if entity is not None
                else None,
                "tags": [{"name": t.name, "color": t.color} for t in tags.get(r["id"], [])],
            }
        )
    return out


async def forget(core: Core, params: Params) -> ForgetReply:
    """Rows marked missing at or under PATH become forgotten (`undo`: missing again). A path
    that is on disk is refused: a file that exists is not a ghost, and `scan` settles it. So is
    a path under an offline root, where a gone file cannot be told from an unmounted share."""
    undo, dry_run = bool(params.get("undo")), bool(params.get("dry_run"))
    place = core.locate(params["path"], params.get("cwd"))
    if isinstance(place, TargetError):
        raise target_error(place)
    root = next(r for r in core.roots() if r.root_id == place.root_id)
    on_disk = root.absolute(place.relpath)
    shown, word = display(on_disk), shell_quote(on_disk)
    if not undo:
        if root.state == "offline":
            raise ApiError(
                ErrorCode.INVALID,
                f"root {root.name} is offline ({root.watch_error or 'not mounted'}), so whether"
                f" {shown} is gone cannot be told; nothing forgotten"
                " (hint: bring the root back, then importctl check)",
            )
        if await anyio.to_thread.run_sync(os.path.lexists, on_disk):
            raise ApiError(
                ErrorCode.INVALID,
                f"{shown} exists on disk: only files that are gone can be forgotten"
                f" (hint: importctl scan {word} brings the catalog up to date)",
            )
    rows = await core.forget(place, undo=undo, dry_run=dry_run)
    if not rows:
        wanted = "forgotten" if undo else "marked missing"
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"no catalog row {wanted} at {shown} (hint: importctl find --all {word} shows what it holds)",
        )
    return {
        "status": "missing" if undo else "forgotten",
        "undo": undo,
        "dry_run": dry_run,
        "count": len(rows),
        "files": [
            {
                "path": wire(root.absolute(r.relpath)),
                "root": root.name,
                "relpath": wire(r.relpath),
                "missing_since": iso_utc(r.missing_since),
            }
            for r in rows
        ],
    }
