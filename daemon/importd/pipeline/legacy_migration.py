"""`migrate-legacy`: a legacy catalog's rows previewed, or committed as a run (kind `legacy`).

The old database is read by the pure stage (`imports/legacy.py`), a batch at a time, in a worker
thread; each batch is located under the roots, statted and looked up in the catalog, decided
(`legacy.decide`), and, on commit, written as one transaction of the single writer: links (the
row's values and tags on its files, its attributes merged into their entities), backlog rows,
and the run's log. Nothing is written by a preview.
"""

from __future__ import annotations

import functools
import logging
import os
import stat as stat_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from importctl.protocol import LegacyRowError, LegacyRowReply
from importd.catalog import legacy as catalog_legacy
from importd.catalog import runs as catalog_runs
from importd.catalog.writer import CatalogWriter
from importd.entities import GapEvent
from importd.imports import legacy
from importd.paths import wire

READ_BATCH = 1000
log = logging.getLogger("importd.imports")


@dataclass
class MigrationResult:
    run_id: int | None
    committed: bool
    totals: dict[str, int]
    rows: list[LegacyRowReply] = field(default_factory=list)
    more: int = 0  # rows decided but not listed (beyond the limit)


def _on_disk(paths: Sequence[bytes]) -> list[bool]:
    out = []
    for path in paths:
        try:
            out.append(stat_mod.S_ISREG(os.lstat(path).st_mode))
        except OSError:
            out.append(False)
    return out


def _totals() -> dict[str, int]:
    return dict.fromkeys(("rows", *legacy.ACTIONS), 0)


async def migrate(
    db_path: str,
    mapping: legacy.LegacyMapping,
    *,
    engine: AsyncEngine,
    writer: CatalogWriter,
    roots: Sequence[tuple[int, str, bytes]],
    emit: Callable[[list[GapEvent]], None],
    clock: Callable[[], float],
    commit: bool,
    limit: int,
) -> MigrationResult | legacy.MappingError:
    opened = await anyio.to_thread.run_sync(legacy.open_read_only, db_path)
    if isinstance(opened, legacy.MappingError):
        return opened
    conn = opened
    try:
        wrong = await anyio.to_thread.run_sync(legacy.check_schema, conn, mapping)
        if wrong is not None:
            return wrong
        if mapping.root is not None and mapping.root not in {name for _, name, _ in roots}:
            names = ", ".join(sorted(name for _, name, _ in roots)) or "none"
            return legacy.MappingError(
                f"files.root: no importd root named {mapping.root!r}", f"roots: {names}"
            )
        result = MigrationResult(None, False, _totals())
        source = f"legacy:{os.path.basename(db_path)}"
        if commit:
            now = clock()
            result.run_id = await writer.call(
                lambda c: catalog_runs.start_run(c, writer.host, "legacy", "manual", None, db_path, now)
            )
        batches = legacy.read_rows(conn, mapping, READ_BATCH)
        ordinal = 0
        try:
            while True:
                batch = await anyio.to_thread.run_sync(next, batches, None)
                if batch is None:
                    break
                await _one_batch(
                    batch, ordinal, mapping, engine, writer, roots, emit, clock, result, source, limit
                )
                ordinal += len(batch)
        except Exception as exc:
            if result.run_id is not None:
                await _finish(writer, result, clock(), "failed", str(exc))
            raise
        if result.run_id is not None:
            await _finish(writer, result, clock(), "completed", None)
            result.committed = True
        return result
    finally:
        conn.close()


async def _finish(
    writer: CatalogWriter, result: MigrationResult, now: float, status: str, error: str | None
) -> None:
    t = result.totals
    summary = ", ".join(f"{t[k]} {k}" for k in legacy.ACTIONS)
    values = {
        "status": status,
        "finished": now,
        "files_seen": t["rows"],
        "changed": t["link"] + t["stale"],
        "vanished": t["missing"],
        "errors": t["invalid"] + t["outside"],
        "detail": summary + (f"; {error}" if error else ""),
    }
    run_id = result.run_id
    assert run_id is not None
    await writer.call(lambda c: catalog_runs.finish_run(c, run_id, values))


async def _one_batch(
    batch: list[legacy.LegacyRow],
    ordinal: int,
    mapping: legacy.LegacyMapping,
    engine: AsyncEngine,
    writer: CatalogWriter,
    roots: Sequence[tuple[int, str, bytes]],
    emit: Callable[[list[GapEvent]], None],
    clock: Callable[[], float],
    result: MigrationResult,
    source: str,
    limit: int,
) -> None:
    located: list[legacy.Located | legacy.Invalid | legacy.Outside] = []
    digests: list[str | legacy.Invalid | None] = []
    for row in batch:
        digest = legacy.trusted_hash(row, mapping)
        digests.append(digest)
        located.append(
            digest if isinstance(digest, legacy.Invalid) else legacy.locate_row(row, mapping, roots)
        )
    t0 = time.perf_counter()
    places = [p for p in located if isinstance(p, legacy.Located)]
    on_disk = dict(
        zip(
            [p.path for p in places],
            await anyio.to_thread.run_sync(_on_disk, [p.path for p in places]),
            strict=True,
        )
    )
    t1 = time.perf_counter()
    wanted = [d for d in digests if isinstance(d, str)]
    async with engine.connect() as conn:
        by_hash = await conn.run_sync(catalog_legacy.known_by_hash, wanted)
        at_path = await conn.run_sync(catalog_legacy.known_at_paths, [(p.root_id, p.relpath) for p in places])
    t2 = time.perf_counter()
    links: list[catalog_legacy.Link] = []
    backlog: list[tuple[int, bytes, str, dict[str, Any]]] = []
    gone: list[tuple[int, bytes, str, dict[str, Any]]] = []  # kept as `missing`, never dropped
    lines: list[tuple[str, str]] = []
    totals = result.totals
    for n, (row, place, digest) in enumerate(zip(batch, located, digests, strict=True), start=ordinal + 1):
        detail: str | None = None
        errors: list[LegacyRowError] = []
        path: str | None = row.path
        if isinstance(place, legacy.Invalid):
            action = "invalid"
            column = mapping.hash if place.reason.startswith("hash") else mapping.path
            errors.append({"column": column or "", "message": place.reason})
            lines.append(("invalid", f"row {row.legacy_id}: {place.reason}"))
        elif isinstance(place, legacy.Outside):
            action, path = "outside", wire(place.path)
            detail = "not under any root: not imported"
            lines.append(("outside", f"row {row.legacy_id}: {wire(place.path)} is not under any root"))
        else:
            assert not isinstance(digest, legacy.Invalid)
            path = wire(place.path)
            found = legacy.decide(
                digest,
                by_hash.get(digest, []) if digest else [],
                at_path.get((place.root_id, place.relpath)),
                on_disk[place.path],
            )
            action, detail = found.action, found.detail
            record = legacy.record_of(row, mapping) | {"source": source}
            if action in ("link", "stale"):
                links.append(catalog_legacy.Link(found.file_ids, row.legacy_id, record))
                if action == "stale":
                    lines.append(("stale", f"row {row.legacy_id}: {path}: {detail}"))
            elif action == "backlog":
                backlog.append((place.root_id, place.relpath, row.legacy_id, record))
            else:
                gone.append((place.root_id, place.relpath, row.legacy_id, record))
                lines.append(("missing", f"row {row.legacy_id}: {path}: no file there (kept, as missing)"))
        totals["rows"] += 1
        totals[action] += 1
        if len(result.rows) < limit:
            result.rows.append(
                {
                    "row": n,
                    "key": row.legacy_id,
                    "path": path,
                    "action": action,
                    "detail": detail,
                    "tags": [name for name, _ in row.tags],
                    "errors": errors,
                }
            )
        else:
            result.more += 1
    t3 = time.perf_counter()
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "legacy batch of %d rows: stat %.3f s, catalog %.3f s, decide %.3f s",
            len(batch), t1 - t0, t2 - t1, t3 - t2,
        )  # fmt: skip
    if result.run_id is None:
        return
    run_id, now = result.run_id, clock()

    def write(c: Any) -> list[GapEvent]:
        events = catalog_legacy.link(c, links, source, run_id, now) if links else []
        catalog_legacy.add_backlog(c, backlog, run_id, now)
        catalog_legacy.add_backlog(c, gone, run_id, now, state="missing")
        catalog_legacy.log_lines(c, run_id, lines, now)
        return events

    emit(await writer.call(functools.partial(write)))


__all__ = ["MigrationResult", "migrate"]
