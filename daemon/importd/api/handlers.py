"""The daemon's API: one table from method name to handler. Each handler validates what the
protocol table cannot (paths, roots), then asks the service's core objects."""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from importctl.protocol import ErrorCode, Method
from importd.api.entity_handlers import build_entity_handlers
from importd.api.maintenance_handlers import build_maintenance_handlers
from importd.api.media_handlers import build_media_handlers
from importd.api.server import ApiError, Handler
from importd.api.wire import iso
from importd.catalog import files as catalog_files
from importd.catalog.entities import links_of_files
from importd.catalog.media import extraction_failures
from importd.catalog.models import STATUS_ERROR, STATUS_MISSING, STATUS_PRESENT
from importd.catalog.roots import root_paths
from importd.paths import display, wire

if TYPE_CHECKING:
    from importd.service import Service

HEX = re.compile(r"[0-9a-fA-F]{6,64}")
FIND_LIMIT = 1000


def build_handlers(service: Service) -> dict[str, Handler]:
    pipeline = service.pipeline

    def root_for(raw: bytes) -> tuple[int, bytes] | None:
        """(root_id, relpath) of an absolute path, by the configured root paths."""
        for candidate in (raw, os.path.realpath(raw)):
            for root_id, state in pipeline.roots.items():
                root = state.raw_path
                if candidate == root:
                    return root_id, b""
                if candidate.startswith(root + b"/"):
                    return root_id, candidate[len(root) + 1 :].rstrip(b"/")
        return None

    async def file_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with service.engine.connect() as conn:
            roots = await conn.run_sync(root_paths)
        async with AsyncSession(service.engine) as session:
            entities = await links_of_files(session, [r["id"] for r in rows])
        out = []
        for r in rows:
            name, path, reconciled = roots.get(r["root_id"], ("?", "", None))
            last_seen = r["last_seen"]
            if r["status"] == STATUS_PRESENT and reconciled and reconciled > last_seen:
                last_seen = reconciled
            out.append(
                {
                    "path": wire(os.fsencode(path) + b"/" + r["relpath"]),
                    "root": name,
                    "relpath": wire(r["relpath"]),
                    "size": r["size"],
                    "blake3": r["blake3"],
                    "status": r["status"],
                    "first_seen": iso(r["first_seen"]),
                    "last_seen": iso(last_seen),
                    "missing_since": iso(r["missing_since"]),
                    "error": r["error"],
                    "mtime_ns": r["mtime_ns"],
                    "inode": r["inode"] % (1 << 64),
                    "dev": r["dev"] % (1 << 64),
                    "entity": entities.get(r["id"]),
                }
            )
        return out

    async def status(_: dict[str, Any]) -> dict[str, Any]:
        async with service.engine.connect() as conn:
            counts = await conn.run_sync(catalog_files.status_counts)
        totals = {"present": 0, "missing": 0, "error": 0}
        total_bytes = 0
        for per_root in counts.values():
            for st, (n, b) in per_root.items():
                totals[st] = totals.get(st, 0) + n
                if st == STATUS_PRESENT:
                    total_bytes += b
        roots = []
        warnings = []
        for root_id, state in pipeline.roots.items():
            per_root = counts.get(root_id, {})
            roots.append(
                {
                    "name": state.config.name,
                    "path": str(state.config.path),
                    "state": state.state if state.state != "starting" else "scanning",
                    "files": per_root.get(STATUS_PRESENT, (0, 0))[0],
                    "missing": per_root.get(STATUS_MISSING, (0, 0))[0],
                    "errors": per_root.get(STATUS_ERROR, (0, 0))[0],
                    "watch": state.config.watch,
                    "watch_error": state.watch_error,
                    "unreadable_dirs": len(state.walk_errors),
                }
            )
            if state.watch_error:
                warnings.append(f"{state.config.name}: {state.watch_error}")
        if pipeline.mapper.last_error:
            warnings.append(f"entities: mapping failing: {pipeline.mapper.last_error}")
        if pipeline.writer.last_error:
            warnings.append(f"catalog: writes failing, retrying: {pipeline.writer.last_error}")
        files_per_s, mib_per_s = pipeline.counters.rates(time.time())
        last = pipeline.last_scan
        last_scan = None
        if last is not None:
            last_root = pipeline.roots.get(last.root_id)
            last_scan = last.to_wire(last_root.config.name if last_root else "?") | {
                "started": iso(last.started),
                "finished": iso(last.finished),
            }
        return {
            "version": service.version,
            "uptime_s": round(time.monotonic() - service.started_monotonic, 3),
            "pid": os.getpid(),
            "catalog": service.catalog_display,
            "roots": roots,
            "files": totals,
            "bytes": total_bytes,
            "queue": pipeline.queue_sizes()
            | {"writing": pipeline.writer.pending, "mapping": pipeline.mapper.pending},
            "hashed_files_per_s": round(files_per_s, 2),
            "hashed_mib_per_s": round(mib_per_s, 2),
            "counters": {
                "hashed_files": pipeline.counters.hashed_files,
                "hashed_bytes": pipeline.counters.hashed_bytes,
                "registered": pipeline.counters.registered,
                "moved": pipeline.counters.moved,
                "vanished": pipeline.counters.vanished,
                "errors": pipeline.counters.errors,
            },
            "last_scan": last_scan,
            "completeness": pipeline.mapper.live.completeness().to_json(),
            "media": pipeline.media.status(),
            "maintenance": await service.maintenance.status(),
            "warnings": warnings,
        }

    async def scan(params: dict[str, Any]) -> dict[str, Any]:
        target = params.get("target")
        jobs: list[tuple[int, bytes]] = []
        if not target:
            jobs = [(rid, b"") for rid in pipeline.roots]
        else:
            by_name = {s.config.name: rid for rid, s in pipeline.roots.items()}
            if target in by_name:
                jobs = [(by_name[target], b"")]
            elif os.path.isabs(target):
                found = root_for(os.fsencode(os.path.normpath(target)))
                if found is None:
                    raise ApiError(ErrorCode.NOT_FOUND, f"{target} is not under any configured root")
                jobs = [found]
            else:
                names = ", ".join(sorted(by_name)) or "none"
                raise ApiError(
                    ErrorCode.NOT_FOUND,
                    f"no root named {target!r} (roots: {names}); give a root name or an absolute path",
                )
        if not jobs:
            raise ApiError(ErrorCode.NOT_FOUND, "no roots are configured")
        scans = [await pipeline.request_scan(rid, prefix, "manual") for rid, prefix in jobs]
        return {"scans": [s.to_wire(pipeline.roots[s.root_id].config.name) for s in scans]}

    async def scan_progress(params: dict[str, Any]) -> dict[str, Any]:
        scan_obj = pipeline.scans.get(params["scan_id"])
        if scan_obj is None:
            raise ApiError(
                ErrorCode.NOT_FOUND, f"no scan {params['scan_id']} (finished scans are kept for a while)"
            )
        state = pipeline.roots.get(scan_obj.root_id)
        return scan_obj.to_wire(state.config.name if state else "?")

    async def info_rows(params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = await find(params)
        if len({r["blake3"] for r in rows}) > 1 or (
            not HEX.fullmatch(params["query"]) and len(rows) > 1 and rows[0]["relpath"] != rows[1]["relpath"]
        ):
            raise ApiError(ErrorCode.INVALID, "info takes one file (or one content hash), not a folder")
        return rows

    async def find(params: dict[str, Any]) -> list[dict[str, Any]]:
        query: str = params["query"]
        if not query:
            raise ApiError(ErrorCode.INVALID, "find needs a path or a BLAKE3 hash (or a prefix of one)")
        async with AsyncSession(service.engine) as session:
            if HEX.fullmatch(query) and not os.path.isabs(query) and not os.path.lexists(query):
                rows = await catalog_files.find_hash(session, query, FIND_LIMIT)
                if not rows:
                    raise ApiError(ErrorCode.NOT_FOUND, f"no file with a BLAKE3 starting {query.lower()}")
                return await file_rows(rows)
            raw = os.fsencode(query)
            cwd = params.get("cwd")
            if not os.path.isabs(raw):
                if not cwd:
                    raise ApiError(
                        ErrorCode.INVALID, f"{query!r} is relative and no working directory was sent"
                    )
                raw = os.path.join(os.fsencode(cwd), raw)
            raw = os.path.normpath(raw)
            found = root_for(raw)
            if found is None:
                raise ApiError(ErrorCode.NOT_FOUND, f"{display(raw)} is not under any configured root")
            rows = await catalog_files.find_path(session, found[0], found[1], FIND_LIMIT)
        if not rows:
            raise ApiError(ErrorCode.NOT_FOUND, f"nothing in the catalog at {display(raw)}")
        return await file_rows(rows)

    async def errors(params: dict[str, Any]) -> list[dict[str, Any]]:
        limit = max(1, min(int(params.get("limit", 1000)), 100_000))
        async with AsyncSession(service.engine) as session:
            rows = await catalog_files.error_rows(session, limit)
        out = [
            {
                "kind": "file",
                "path": r["path"],
                "root": r["root"],
                "error": r["error"],
                "since": r["last_seen"],
            }
            for r in await file_rows(rows)
        ]
        async with service.engine.connect() as conn:
            failures = await conn.run_sync(extraction_failures, limit)
        for _digest, extractor, error, at, rid, rel in failures:
            state_of = pipeline.roots.get(rid)
            out.append(
                {
                    "kind": "extract",
                    "path": wire(state_of.raw_path + b"/" + rel) if state_of else wire(rel),
                    "root": state_of.config.name if state_of else "?",
                    "error": f"{extractor}: {error}",
                    "since": iso(at),
                }
            )
        for state in pipeline.roots.values():
            for err in state.walk_errors:
                out.append(
                    {
                        "kind": "directory",
                        "path": wire(state.raw_path + (b"/" + err.relpath if err.relpath else b"")),
                        "root": state.config.name,
                        "error": err.reason,
                        "since": None,
                    }
                )
            if state.watch_error:
                out.append(
                    {
                        "kind": "root",
                        "path": str(state.config.path),
                        "root": state.config.name,
                        "error": state.watch_error,
                        "since": None,
                    }
                )
        return out[:limit]

    return (
        build_entity_handlers(service)
        | build_media_handlers(service, info_rows)
        | build_maintenance_handlers(service)
        | {
            Method.STATUS: status,
            Method.SCAN: scan,
            Method.SCAN_PROGRESS: scan_progress,
            Method.FIND: find,
            Method.ERRORS: errors,
        }
    )
