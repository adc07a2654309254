"""Read-side queries (and the few small writes run through `CatalogWriter.call`).

All functions take a synchronous `Connection`; callers run them with `AsyncConnection.run_sync`
so a query is one hop to the driver's thread, not one per row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any
from urllib.parse import quote

import anyio
from sqlalchemy import and_, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.engine import sqlite_file
from importd.catalog.models import STATUS_ERROR, STATUS_MISSING, STATUS_PRESENT, FileRow, RootRow, RunRow
from importd.catalog.writer import chunks
from importd.items import CatalogSnapshot, KnownRow, s64
from importd.paths import subtree_bounds

files = FileRow.__table__  # type: ignore[attr-defined]
roots = RootRow.__table__  # type: ignore[attr-defined]
runs = RunRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class IdentityMatch:
    row_id: int
    root_id: int
    relpath: bytes
    size: int
    mtime_ns: int
    inode: int
    dev: int
    blake3: str | None
    status: str


def ensure_roots(conn: Connection, wanted: list[tuple[str, str]]) -> dict[str, int]:
    """Create rows for configured roots (by name); a root whose path changed is updated."""
    existing = {
        name: (rid, path) for rid, name, path in conn.execute(select(roots.c.id, roots.c.name, roots.c.path))
    }
    ids: dict[str, int] = {}
    for name, path in wanted:
        if name in existing:
            rid, old_path = existing[name]
            if old_path != path:
                conn.execute(update(roots).where(roots.c.id == rid).values(path=path))
            ids[name] = rid
        else:
            res = conn.execute(roots.insert().values(name=name, path=path))
            ids[name] = int(res.inserted_primary_key[0])  # type: ignore[index]
    return ids


def root_paths(conn: Connection) -> dict[int, tuple[str, str, float | None]]:
    rows = conn.execute(select(roots.c.id, roots.c.name, roots.c.path, roots.c.last_reconciled))
    return {rid: (name, path, last) for rid, name, path, last in rows}


def mark_reconciled(conn: Connection, root_id: int, at: float) -> None:
    conn.execute(update(roots).where(roots.c.id == root_id).values(last_reconciled=at))


def _snapshot_sql(root_id: int, prefix: bytes | None) -> tuple[str, str, dict[str, Any]]:
    cond, params = "root_id = :root", dict[str, Any](root=root_id)
    if prefix:
        low, high = subtree_bounds(prefix)
        cond += " AND ((relpath >= :low AND relpath < :high) OR relpath = :prefix)"
        params |= {"low": low, "high": high, "prefix": prefix}
    # `+status`: not through ix_files_status; a scan of the table beats a lookup per row.
    present = f"SELECT relpath, size, mtime_ns, inode, dev FROM files WHERE {cond} AND +status = 'present'"
    errors = f"SELECT relpath, id FROM files WHERE {cond} AND status = 'error'"
    return present, errors, params


def _snapshot_of(present: list[KnownRow], errors: list[tuple[bytes, int]]) -> CatalogSnapshot:
    by_path = dict(zip(map(itemgetter(0), present), present, strict=True))
    return CatalogSnapshot(by_path, {r[0]: r[1] for r in errors})


def snapshot(conn: Connection, root_id: int, prefix: bytes | None) -> CatalogSnapshot:
    """Live rows of a root (or of the subtree at `prefix`), keyed by relpath: only the columns
    the comparison needs."""
    present, errors, params = _snapshot_sql(root_id, prefix)
    # Plain tuples with bytes relpaths, as sqlite3 gives them (the comparison needs tuples).
    rows = [(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in conn.execute(text(present), params)]
    return _snapshot_of(rows, [(bytes(r[0]), r[1]) for r in conn.execute(text(errors), params)])


def snapshot_from_file(db_file: str, root_id: int, prefix: bytes | None) -> CatalogSnapshot:
    """The same from a SQLite catalog, on a read-only connection of its own in the calling
    thread. Every start-up reads 100,000 rows; through the async engine's single connection
    thread (and its result processing) that took three times as long as the walk beside it."""
    present, errors, params = _snapshot_sql(root_id, prefix)
    conn = open_reader(db_file)
    try:
        conn.execute("BEGIN")  # one read transaction: both statements see the same catalog
        present_rows = conn.execute(present, params).fetchall()
        error_rows = conn.execute(errors, params).fetchall()
        conn.execute("COMMIT")
        return _snapshot_of(present_rows, error_rows)
    finally:
        conn.close()


async def read_snapshot(engine: AsyncEngine, root_id: int, prefix: bytes | None) -> CatalogSnapshot:
    """`snapshot`, on a connection of its own in a worker thread when the catalog is a SQLite file."""
    if (db_file := sqlite_file(engine)) is not None:
        return await anyio.to_thread.run_sync(snapshot_from_file, db_file, root_id, prefix)
    async with engine.connect() as conn:
        return await conn.run_sync(snapshot, root_id, prefix)


def _inodes_by_device(keys: list[tuple[int, int]]) -> list[tuple[int, Sequence[int]]]:
    """(dev, inodes) for each device, inodes sorted and in chunks that fit one IN list; both as
    the catalog stores them (signed)."""
    by_dev: dict[int, set[int]] = {}
    for dev, ino in keys:
        by_dev.setdefault(s64(dev), set()).add(s64(ino))
    return [(dev, part) for dev, inodes in by_dev.items() for part in chunks(sorted(inodes))]


def identities(conn: Connection, keys: list[tuple[int, int]]) -> list[IdentityMatch]:
    """Rows (any status) with one of the given (dev, inode) identities. Grouped by device so
    each query seeks the (dev, inode) index instead of scanning it."""
    out: list[IdentityMatch] = []
    for dev, part in _inodes_by_device(keys):
        rows = conn.execute(
            select(
                files.c.id,
                files.c.root_id,
                files.c.relpath,
                files.c.size,
                files.c.mtime_ns,
                files.c.inode,
                files.c.dev,
                files.c.blake3,
                files.c.status,
            ).where(files.c.dev == dev, files.c.inode.in_(part))
        )
        for r in rows:
            out.append(
                IdentityMatch(
                    r.id,
                    r.root_id,
                    bytes(r.relpath),
                    r.size,
                    r.mtime_ns,
                    r.inode,
                    r.dev,
                    r.blake3,
                    r.status,
                )
            )
    return out


def identities_sqlite(conn: sqlite3.Connection, keys: list[tuple[int, int]]) -> list[IdentityMatch]:
    """`identities` on a plain sqlite3 connection (`open_reader`), for a walk's own thread."""
    out: list[IdentityMatch] = []
    for dev, part in _inodes_by_device(keys):
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            "SELECT id, root_id, relpath, size, mtime_ns, inode, dev, blake3, status FROM files"
            f" WHERE dev = ? AND inode IN ({marks})",
            (dev, *part),
        )
        out.extend(IdentityMatch(i, r, bytes(p), *rest) for i, r, p, *rest in rows)
    return out


def shrink_cache(conn: Connection) -> None:
    """Let a SQLite connection give back the pages it caches (the writer keeps up to 32 MiB
    after a big import); nothing to do elsewhere."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA shrink_memory")


def open_reader(db_file: str) -> sqlite3.Connection:
    """A read-only connection to the catalog file, for a worker thread of its own: reads there
    wait neither for the event loop nor for the async engine's connection thread."""
    return sqlite3.connect(
        f"file:{quote(db_file)}?mode=ro",
        uri=True,
        timeout=10.0,
        isolation_level=None,
        check_same_thread=False,
    )


def status_counts(conn: Connection) -> dict[int, dict[str, tuple[int, int]]]:
    """{root_id: {status: (files, bytes)}}."""
    rows = conn.execute(
        select(
            files.c.root_id, files.c.status, func.count(), func.coalesce(func.sum(files.c.size), 0)
        ).group_by(files.c.root_id, files.c.status)
    )
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for root_id, status, count, size in rows:
        out.setdefault(root_id, {})[status] = (int(count), int(size))
    return out


_FILE_COLUMNS = (
    files.c.id,
    files.c.root_id,
    files.c.relpath,
    files.c.size,
    files.c.blake3,
    files.c.status,
    files.c.first_seen,
    files.c.last_seen,
    files.c.missing_since,
    files.c.error,
    files.c.mtime_ns,
    files.c.inode,
    files.c.dev,
)


def _rows(conn: Connection, cond: Any, limit: int) -> list[dict[str, Any]]:
    stmt = (
        select(*_FILE_COLUMNS).where(cond).order_by(files.c.root_id, files.c.relpath, files.c.id).limit(limit)
    )
    return [dict(r._mapping) | {"relpath": bytes(r.relpath)} for r in conn.execute(stmt)]


def find_path(conn: Connection, root_id: int, relpath: bytes, limit: int) -> list[dict[str, Any]]:
    """Rows at the path (live first, then its missing history), or below it when a folder."""
    exact = _rows(conn, and_(files.c.root_id == root_id, files.c.relpath == relpath), limit)
    if exact:
        exact.sort(key=lambda r: (r["status"] == STATUS_MISSING, -(r["missing_since"] or 0)))
        return exact
    low, high = subtree_bounds(relpath) if relpath else (b"", b"\xff" * 8)
    return _rows(
        conn, and_(files.c.root_id == root_id, files.c.relpath >= low, files.c.relpath < high), limit
    )


def find_hash(conn: Connection, prefix: str, limit: int) -> list[dict[str, Any]]:
    prefix = prefix.lower()
    if len(prefix) == 64:
        cond = files.c.blake3 == prefix
    else:
        cond = and_(files.c.blake3 >= prefix, files.c.blake3 < prefix + "g")
    return _rows(conn, cond, limit)


def error_rows(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return _rows(conn, files.c.status == STATUS_ERROR, limit)


def start_run(
    conn: Connection, kind: str, trigger: str, root_id: int | None, target: str | None, at: float
) -> int:
    res = conn.execute(
        runs.insert().values(
            kind=kind, trigger=trigger, root_id=root_id, target=target, status="running", started=at
        )
    )
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def finish_run(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def abandon_running(conn: Connection, at: float) -> int:
    """Runs left `running` by a crash: the start-up reconcile redoes their work."""
    res = conn.execute(
        update(runs).where(runs.c.status == "running").values(status="interrupted", finished=at)
    )
    return res.rowcount or 0


def last_runs(conn: Connection, kind: str, limit: int) -> list[dict[str, Any]]:
    stmt = select(runs).where(runs.c.kind == kind).order_by(runs.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


__all__ = [
    "STATUS_ERROR",
    "STATUS_MISSING",
    "STATUS_PRESENT",
    "IdentityMatch",
]


def unmatched_rows(conn: Connection, root_id: int | None, limit: int) -> tuple[list[tuple[int, bytes]], int]:
    """Present files of mapped roots that matched no rule; and how many there are in all."""
    from importd.catalog.models import EntityFileRow

    links = EntityFileRow.__table__  # type: ignore[attr-defined]
    cond = and_(links.c.entity_id.is_(None), links.c.role.is_(None), files.c.status == STATUS_PRESENT)
    if root_id is not None:
        cond = and_(cond, links.c.root_id == root_id)
    base = select(files.c.root_id, files.c.relpath).join(links, links.c.file_id == files.c.id).where(cond)
    total = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = conn.execute(base.order_by(files.c.root_id, files.c.relpath).limit(limit))
    return [(rid, bytes(rel)) for rid, rel in rows], int(total)


def unmatched_by_folder(conn: Connection, root_id: int | None) -> list[tuple[int, bytes]]:
    """(root_id, relpath) of every unmatched file, for the per-folder counts."""
    rows, _ = unmatched_rows(conn, root_id, 10_000_000)
    return rows


def conflict_rows(conn: Connection, status: str | None) -> list[dict[str, Any]]:
    from importd.catalog.models import ConflictRow, EntityRow

    conflicts = ConflictRow.__table__  # type: ignore[attr-defined]
    entities = EntityRow.__table__  # type: ignore[attr-defined]
    stmt = (
        select(conflicts, entities.c.type.label("entity_type"), entities.c.name.label("entity_name"))
        .join(entities, entities.c.id == conflicts.c.entity_id)
        .order_by(conflicts.c.id)
    )
    if status:
        stmt = stmt.where(conflicts.c.status == status)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def run_rows(conn: Connection, limit: int) -> list[dict[str, Any]]:
    stmt = select(runs).order_by(runs.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def run_row(
    conn: Connection, run_id: int, log_limit: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from importd.catalog.models import RunLogRow

    runlog = RunLogRow.__table__  # type: ignore[attr-defined]
    row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        return None, []
    logs = conn.execute(
        select(runlog).where(runlog.c.run_id == run_id).order_by(runlog.c.id).limit(log_limit)
    )
    return dict(row._mapping), [dict(r._mapping) for r in logs]


def entity_links(conn: Connection, file_ids: list[int]) -> dict[int, dict[str, Any]]:
    """{file_id: {"type", "name", "role", "pre_approved"}} for mapped files."""
    from importd.catalog.models import EntityFileRow, EntityRow

    links = EntityFileRow.__table__  # type: ignore[attr-defined]
    entities = EntityRow.__table__  # type: ignore[attr-defined]
    out: dict[int, dict[str, Any]] = {}
    for part in chunks(file_ids):
        rows = conn.execute(
            select(links.c.file_id, entities.c.type, entities.c.name, links.c.role, links.c.pre_approved)
            .join(entities, entities.c.id == links.c.entity_id)
            .where(links.c.file_id.in_(part))
        )
        for fid, etype, name, role, pre in rows:
            out[fid] = {"type": etype, "name": name, "role": role, "pre_approved": bool(pre)}
    return out


def present_paths(conn: Connection, digests: list[str]) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    for part in chunks(sorted(set(digests))):
        rows = conn.execute(
            select(files.c.blake3, files.c.root_id, files.c.relpath)
            .where(files.c.status == STATUS_PRESENT, files.c.blake3.in_(part))
            .order_by(files.c.root_id, files.c.relpath)
        )
        for digest, rid, rel in rows:
            out.setdefault(digest, []).append((rid, bytes(rel)))
    return out


def exact_duplicates(conn: Connection) -> dict[str, list[tuple[int, bytes]]]:
    """Contents present at two paths or more."""
    dup = (
        select(files.c.blake3)
        .where(files.c.status == STATUS_PRESENT, files.c.blake3.is_not(None))
        .group_by(files.c.blake3)
        .having(func.count() > 1)
    )
    digests = [d for (d,) in conn.execute(dup)]
    return present_paths(conn, digests)


def content_media(conn: Connection, digest: str) -> dict[str, Any]:
    """Everything extracted from one content: facts per extractor, hashes, faces."""
    from importd.catalog.models import ExtractionRow, FaceRow, ImageHashRow, VideoFingerprintRow

    ex = ExtractionRow.__table__  # type: ignore[attr-defined]
    ih = ImageHashRow.__table__  # type: ignore[attr-defined]
    vf = VideoFingerprintRow.__table__  # type: ignore[attr-defined]
    fc = FaceRow.__table__  # type: ignore[attr-defined]
    extractions = [dict(r._mapping) for r in conn.execute(select(ex).where(ex.c.blake3 == digest))]
    image = conn.execute(select(ih).where(ih.c.blake3 == digest)).first()
    video = conn.execute(select(vf).where(vf.c.blake3 == digest)).first()
    faces = [
        dict(r._mapping) for r in conn.execute(select(fc).where(fc.c.blake3 == digest).order_by(fc.c.idx))
    ]
    return {
        "extractions": extractions,
        "image": dict(image._mapping) if image else None,
        "video": dict(video._mapping) if video else None,
        "faces": faces,
    }


def extraction_failures(conn: Connection, limit: int) -> list[tuple[str, str, str, float, int, bytes]]:
    """(blake3, extractor, error, at, root_id, relpath) of failed extractions, one path each."""
    from importd.catalog.models import ExtractionRow

    ex = ExtractionRow.__table__  # type: ignore[attr-defined]
    rows = conn.execute(
        select(
            ex.c.blake3,
            ex.c.extractor,
            ex.c.error,
            ex.c.at,
            func.min(files.c.root_id),
            func.min(files.c.relpath),
        )
        .join(files, files.c.blake3 == ex.c.blake3)
        .where(ex.c.status == "failed", files.c.status == STATUS_PRESENT)
        .group_by(ex.c.blake3, ex.c.extractor)
        .limit(limit)
    )
    return [(d, e, err or "", at, rid, bytes(rel)) for d, e, err, at, rid, rel in rows]
