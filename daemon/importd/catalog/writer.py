"""The single catalog writer.

Every change to the catalog goes through one task that drains its queue into batches and applies
each batch in one transaction with set-based statements (a handful of queries per batch, not per
file). A kill -9 loses at most the uncommitted batch; the next start-up reconcile redoes it, and
the partial unique index on live paths makes a replay unable to duplicate a row.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, TypeVar, cast

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import and_, bindparam, exc, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.brake import MASS_MIN_FILES, VanishLimits, should_hold
from importd.catalog import holds
from importd.catalog.engine import Checkpointer, dialect_insert, sqlite_file, writer_engine
from importd.catalog.failures import failure_text, is_locked
from importd.catalog.models import (
    GONE_STATUSES,
    LIVE_PATH_WHERE,
    STATUS_ERROR,
    STATUS_MISSING,
    STATUS_PRESENT,
)
from importd.catalog.tables import IN_CHUNK, chunks, contents, file_moves, files, insert_rows
from importd.items import (
    CatalogOp,
    ConfirmHeld,
    FileFailure,
    HashedFile,
    MovedFile,
    Vanished,
    VanishedRows,
    record,
    s64,
)
from importd.paths import display, subtree_bounds
from importd.threads import thread_named

log = logging.getLogger("importd.catalog")

T = TypeVar("T")
BATCH_MAX = 4000
LINGER_S = 0.02
# A walk's batches (a cold import, a big copy): each commit writes every page it dirtied to the
# WAL once, and new rows dirty pages all over the digest indexes (BLAKE3 keys are random), so a
# commit of 1,000 rows writes nearly as many pages as one of 8,000. Measured with 100,000 new
# files: 800 MB through the WAL in transactions of 1,024 rows, 300 MB in 4,096, 110 MB in 16,384.
# Such batches linger for more up to this size and time; the queue holds two of them, so the
# walk fills the next while one commits.
BULK_BATCH_MAX = 8192
BULK_LINGER_S = 0.5


@record
class FileChange:
    """One committed change to a file row, for the stages after registration (entities, gaps,
    events). kind: new | updated | moved | revived | vanished | error; and, handed to the mapper
    by `importctl forget` (not by a batch), forgotten | unforgotten."""

    file_id: int
    root_id: int
    relpath: bytes
    kind: str
    blake3: str | None = None
    duplicate: bool = False


@dataclass
class BatchResult:
    inserted: int = 0
    updated: int = 0
    moved: int = 0
    revived: int = 0
    errors: int = 0
    vanished: int = 0
    hashed_files: int = 0
    hashed_bytes: int = 0
    duplicates: int = 0
    touched_roots: set[int] = field(default_factory=set)
    changes: list[FileChange] = field(default_factory=list)
    # Roots whose hold changed in this batch -> rows held now (0: the hold ended).
    held: dict[int, int] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        for name in (
            "inserted",
            "updated",
            "moved",
            "revived",
            "errors",
            "vanished",
            "hashed_files",
            "hashed_bytes",
            "duplicates",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.touched_roots |= other.touched_roots
        self.changes.extend(other.changes)
        self.held.update(other.held)


@dataclass
class HoldState:
    """What the brake needs inside a transaction: its limits, and the rows held per root (roots
    without a hold absent), kept up to date as the batch holds and releases."""

    limits: VanishLimits
    held: dict[int, int] = field(default_factory=dict)

    def recount(self, conn: Connection, root_id: int, result: BatchResult) -> None:
        n = holds.held_counts(conn).get(root_id, 0)
        if n:
            self.held[root_id] = n
        else:
            self.held.pop(root_id, None)
        result.held[root_id] = n


_CONTENT_COLUMNS = ("blake3", "size", "first_seen")


def _insert_contents(conn: Connection, values: list[tuple[str, int, float]]) -> None:
    """New content rows, (blake3, size, first_seen) each; known ones are left as they are."""
    if not values:
        return
    if _raw_sqlite(conn):
        insert_rows(conn, "contents", _CONTENT_COLUMNS, values, " ON CONFLICT (blake3) DO NOTHING")
        return
    rows = [dict(zip(_CONTENT_COLUMNS, v, strict=True)) for v in values]
    stmt = dialect_insert(conn, contents).on_conflict_do_nothing(index_elements=["blake3"])
    conn.execute(stmt, rows)


def _file_values(op: HashedFile | MovedFile | FileFailure, now: float) -> dict[str, Any]:
    st = op.stat
    values: dict[str, Any] = {
        "root_id": op.ref.root_id,
        "relpath": op.ref.relpath,
        "display_path": display(op.ref.relpath),
        "size": st.size if st else 0,
        "mtime_ns": st.mtime_ns if st else 0,
        "inode": s64(st.inode) if st else 0,
        "dev": s64(st.dev) if st else 0,
        "last_seen": now,
    }
    if isinstance(op, FileFailure):
        values.update(status=STATUS_ERROR, error=op.reason[:2000])
    else:
        values.update(status=STATUS_PRESENT, error=None, blake3=op.blake3, missing_since=None)
        if isinstance(op, HashedFile) and op.hashed:
            values["hashed_at"] = now
    return values


def _raw_sqlite(conn: Connection) -> bool:
    """The hot statements of a cold import go straight to the SQLite driver: SQLAlchemy's
    per-row parameter processing and IN-list expansion cost three times the SQL itself (profiled
    at 100,000 rows). Other databases take the portable path."""
    return conn.dialect.name == "sqlite"


def _rows_in(
    conn: Connection, head: str, before: tuple[Any, ...], values: Sequence[Any], tail: str = ""
) -> Any:
    marks = ",".join("?" * len(values))
    return conn.exec_driver_sql(f"{head} IN ({marks}){tail}", (*before, *values)).fetchall()


def _live_rows(conn: Connection, keys: Sequence[tuple[int, bytes]]) -> dict[tuple[int, bytes], int]:
    found: dict[tuple[int, bytes], int] = {}
    by_root: dict[int, list[bytes]] = {}
    for root_id, relpath in keys:
        by_root.setdefault(root_id, []).append(relpath)
    raw = _raw_sqlite(conn)
    for root_id, paths in by_root.items():
        if raw:
            paths = _in_folders_with_live_rows(conn, root_id, paths)
        for part in chunks(paths):
            if raw:
                rows = _rows_in(
                    conn,
                    f"SELECT id, relpath FROM files WHERE root_id = ? AND {LIVE_PATH_WHERE} AND relpath",
                    (root_id,),
                    part,
                )
            else:
                rows = conn.execute(
                    select(files.c.id, files.c.relpath).where(
                        files.c.root_id == root_id,
                        files.c.status.not_in(GONE_STATUSES),
                        files.c.relpath.in_(part),
                    )
                )
            for row_id, relpath in rows:
                found[(root_id, bytes(relpath))] = row_id
    return found


def _in_folders_with_live_rows(conn: Connection, root_id: int, paths: list[bytes]) -> list[bytes]:
    """The paths whose folder holds any live row: only those can have one. One probe of the
    live-path index per folder instead of a lookup per path: a cold import's batches are whole
    new folders, and their 100,000 lookups found nothing. Files at the root are always looked up."""
    by_folder: dict[bytes, list[bytes]] = {}
    for relpath in paths:
        by_folder.setdefault(relpath.rpartition(b"/")[0], []).append(relpath)
    if len(by_folder) * 4 > len(paths):  # few files a folder: a probe each would save little
        return paths
    folders = [folder for folder in by_folder if folder]
    occupied: set[int] = set()
    for start in range(0, len(folders), IN_CHUNK // 3):
        part = folders[start : start + IN_CHUNK // 3]
        bounds = list(chain.from_iterable((i, *subtree_bounds(f)) for i, f in enumerate(part, start)))
        rows = conn.exec_driver_sql(
            "WITH folder(i, low, high) AS (VALUES " + ",".join(["(?,?,?)"] * len(part)) + ") "
            "SELECT i FROM folder WHERE EXISTS (SELECT 1 FROM files WHERE root_id = ? "
            f"AND {LIVE_PATH_WHERE} AND relpath >= folder.low AND relpath < folder.high)",
            (*bounds, root_id),
        )
        occupied.update(i for (i,) in rows)
    kept = list(by_folder.get(b"", []))
    for i in sorted(occupied):
        kept += by_folder[folders[i]]
    return kept


def _any_missing(conn: Connection) -> bool:
    """Does any row wait to be found again? One probe of the status index."""
    return bool(
        conn.execute(select(select(files.c.id).where(files.c.status == STATUS_MISSING).exists())).scalar()
    )


def _missing_by_hash(conn: Connection, hashes: Sequence[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    raw = _raw_sqlite(conn)
    for part in chunks(sorted(set(hashes))):
        if raw:
            rows = _rows_in(
                conn,
                "SELECT id, blake3 FROM files WHERE status = 'missing' AND blake3",
                (),
                part,
                " ORDER BY missing_since DESC, id DESC",
            )
        else:
            rows = conn.execute(
                select(files.c.id, files.c.blake3)
                .where(files.c.status == STATUS_MISSING, files.c.blake3.in_(part))
                .order_by(files.c.missing_since.desc(), files.c.id.desc())
            )
        for row_id, digest in rows:
            found.setdefault(digest, []).append(row_id)
    return found


def _missing_by_path(conn: Connection, keys: Sequence[tuple[int, bytes]]) -> dict[tuple[int, bytes], int]:
    found: dict[tuple[int, bytes], int] = {}
    by_root: dict[int, list[bytes]] = {}
    for root_id, relpath in keys:
        by_root.setdefault(root_id, []).append(relpath)
    raw = _raw_sqlite(conn)
    for root_id, paths in by_root.items():
        for part in chunks(paths):
            if raw:
                rows = _rows_in(
                    conn,
                    "SELECT id, relpath FROM files WHERE root_id = ? AND status = 'missing' AND relpath",
                    (root_id,),
                    part,
                    " ORDER BY missing_since ASC, id ASC",
                )
            else:
                rows = conn.execute(
                    select(files.c.id, files.c.relpath)
                    .where(
                        files.c.root_id == root_id,
                        files.c.status == STATUS_MISSING,
                        files.c.relpath.in_(part),
                    )
                    .order_by(files.c.missing_since.asc(), files.c.id.asc())
                )
            for row_id, relpath in rows:  # the latest wins: iterate oldest first
                found[(root_id, bytes(relpath))] = row_id
    return found


# New rows come in two shapes, and name only the columns they set: the driver binds None and
# bytes through its adapter lookup, which made binding a new row cost twice as much.
_HASHED_COLUMNS = (
    "root_id", "relpath", "display_path", "size", "mtime_ns", "inode", "dev",
    "blake3", "status", "first_seen", "last_seen", "hashed_at",
)  # fmt: skip
_FAILED_COLUMNS = (
    "root_id", "relpath", "display_path", "size", "mtime_ns", "inode", "dev",
    "status", "first_seen", "last_seen", "error",
)  # fmt: skip
_SHAPES = {len(_HASHED_COLUMNS): _HASHED_COLUMNS, len(_FAILED_COLUMNS): _FAILED_COLUMNS}


def _new_row(op: HashedFile | FileFailure, now: float) -> tuple[Any, ...]:
    """A new file row: values for _HASHED_COLUMNS or _FAILED_COLUMNS, told apart by length (a
    cold import makes 100,000 of them: tuples, not dicts)."""
    st = op.stat
    if st is None:
        size = mtime_ns = inode = dev = 0
    else:
        size, mtime_ns, inode, dev = st.size, st.mtime_ns, s64(st.inode), s64(st.dev)
    relpath = op.ref.relpath
    if isinstance(op, FileFailure):
        return (
            op.ref.root_id, relpath, display(relpath), size, mtime_ns, inode, dev,
            STATUS_ERROR, now, now, op.reason[:2000],
        )  # fmt: skip
    return (
        op.ref.root_id, relpath, display(relpath), size, mtime_ns, inode, dev,
        op.blake3, STATUS_PRESENT, now, now, now if op.hashed else None,
    )  # fmt: skip


def _digest_of(row: tuple[Any, ...]) -> str | None:
    return row[7] if len(row) == len(_HASHED_COLUMNS) else None


def _insert_files(
    conn: Connection, inserts: list[tuple[Any, ...]]
) -> list[tuple[int, int, bytes, str | None]]:
    """Insert new rows (`_new_row`), in order; returns (id, root_id, relpath, blake3) for each."""
    raw = _raw_sqlite(conn)
    if raw:
        (before,) = conn.exec_driver_sql("SELECT max(id) FROM files").one()
    out: list[tuple[int, int, bytes, str | None]] = []
    start = 0
    for end in range(1, len(inserts) + 1):  # runs of one shape, in order
        if end < len(inserts) and len(inserts[end]) == len(inserts[start]):
            continue
        columns = _SHAPES[len(inserts[start])]
        if raw:
            # bytearray: bound as a blob without the adapter lookup that bytes goes through.
            run = [(r[0], bytearray(r[1]), *r[2:]) for r in inserts[start:end]]
            insert_rows(conn, "files", columns, run)
        else:
            stmt = files.insert().returning(
                files.c.id, files.c.root_id, files.c.relpath, files.c.blake3, sort_by_parameter_order=True
            )
            rows = [dict(zip(columns, r, strict=True)) for r in inserts[start:end]]
            out += [(i, r, bytes(p), d) for i, r, p, d in conn.execute(stmt, rows)]
        start = end
    if not raw:
        return out
    # executemany cannot return rows. This connection is the only writer and holds the write
    # lock: SQLite gives each new row max(id) + 1 (unless max(id) is 2**63 - 1, when it picks
    # free ids at random), so a last id of before + n means the ids are before+1 .. before+n in
    # order. Otherwise they come from the live-path index.
    (last,) = conn.exec_driver_sql("SELECT last_insert_rowid()").one()
    first = (before or 0) + 1
    if last == first + len(inserts) - 1:
        return [(first + i, row[0], row[1], _digest_of(row)) for i, row in enumerate(inserts)]
    ids = _live_rows(conn, [(row[0], row[1]) for row in inserts])
    return [(ids[(row[0], row[1])], row[0], row[1], _digest_of(row)) for row in inserts]


def _update_rows(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """Executemany UPDATE by id; rows are grouped by their set of keys."""
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in updates:
        by_shape.setdefault(tuple(sorted(values)), []).append(values)
    for shape, rows in by_shape.items():
        cols = [c for c in shape if c != "row_id"]
        stmt = update(files).where(files.c.id == bindparam("row_id")).values({c: bindparam(c) for c in cols})
        conn.execute(stmt, rows)


def _record_moves(
    conn: Connection, row_ids: list[int], destinations: dict[int, tuple[int, bytes]], now: float
) -> None:
    """Keep the path a row leaves, so a symlink into the old place can find the file again."""
    history = []
    for part in chunks(row_ids):
        for row_id, root_id, relpath in conn.execute(
            select(files.c.id, files.c.root_id, files.c.relpath).where(files.c.id.in_(part))
        ):
            if destinations.get(row_id) != (root_id, bytes(relpath)):
                history.append(
                    {"file_id": row_id, "old_root_id": root_id, "old_relpath": bytes(relpath), "at": now}
                )
    if history:
        conn.execute(file_moves.insert(), history)


def _mark_missing_ids(conn: Connection, row_ids: Sequence[int], now: float) -> list[FileChange]:
    changes: list[FileChange] = []
    for part in chunks(list(row_ids)):
        res = conn.execute(
            update(files)
            .where(files.c.id.in_(part), files.c.status.not_in(GONE_STATUSES))
            .values(status=STATUS_MISSING, missing_since=now)
            .returning(files.c.id, files.c.root_id, files.c.relpath, files.c.blake3)
        )
        changes.extend(FileChange(i, r, bytes(p), "vanished", h) for i, r, p, h in res)
    return changes


def _vanished_row_ids(conn: Connection, op: VanishedRows) -> list[int]:
    ids: list[int] = []
    for part in chunks(list(op.relpaths)):
        ids += conn.execute(
            select(files.c.id).where(
                files.c.root_id == op.root_id,
                files.c.relpath.in_(part),
                text(LIVE_PATH_WHERE),  # the partial index's own words, or SQLite cannot use it
                files.c.last_seen < op.walk_started,
            )
        ).scalars()
    return ids


def _gone_row_ids(conn: Connection, burst: Sequence[Vanished]) -> list[int]:
    ids: dict[int, None] = {}  # in order, once each
    for op in burst:
        conds = [files.c.relpath == op.ref.relpath]
        if op.subtree:
            # The path and the range below it as two lookups of the live-path index (the status
            # spelled as its condition): as `status NOT IN (?, ?)` and `= path OR range`, SQLite
            # searched by root alone and read all of the root's rows for each deletion.
            low, high = subtree_bounds(op.ref.relpath)
            conds.append(and_(files.c.relpath >= low, files.c.relpath < high))
        for cond in conds:
            if op.at:
                cond = and_(cond, files.c.last_seen < op.at)
            query = select(files.c.id).where(files.c.root_id == op.ref.root_id, text(LIVE_PATH_WHERE), cond)
            ids.update(dict.fromkeys(conn.execute(query).scalars()))
    return list(ids)


def apply_ops(
    conn: Connection, ops: Sequence[CatalogOp], now: float, brake: HoldState | None = None
) -> BatchResult:
    """Apply a batch in order; consecutive registrations are handled together, set-based, and
    consecutive watcher deletions of one root are one burst for the brake (`brake`: None, no
    brake)."""
    result = BatchResult()
    segment: list[HashedFile | MovedFile | FileFailure] = []
    burst: list[Vanished] = []
    for op in ops:
        if segment and not isinstance(op, HashedFile | MovedFile | FileFailure):
            result.add(_apply_registrations(conn, segment, now, brake))
            segment = []
        if burst and not (isinstance(op, Vanished) and op.ref.root_id == burst[0].ref.root_id):
            result.add(_vanish_or_hold(conn, burst[0].ref.root_id, _gone_row_ids(conn, burst), now, brake))
            burst = []
        if isinstance(op, Vanished):
            burst.append(op)
        elif isinstance(op, VanishedRows):
            ids = _vanished_row_ids(conn, op)
            result.add(_vanish_or_hold(conn, op.root_id, ids, now, brake, op.walked))
        elif isinstance(op, ConfirmHeld):
            result.add(_confirm_held(conn, op.root_id, brake))
        else:
            segment.append(op)
    if segment:
        result.add(_apply_registrations(conn, segment, now, brake))
    if burst:
        result.add(_vanish_or_hold(conn, burst[0].ref.root_id, _gone_row_ids(conn, burst), now, brake))
    return result


def _vanish_or_hold(
    conn: Connection,
    root_id: int,
    ids: list[int],
    now: float,
    brake: HoldState | None,
    walked: bytes | None = None,
) -> BatchResult:
    """Mark these rows of a root missing, unless that is a mass disappearance (or the root is
    held already): then they are held, unchanged. A walk (`walked`) first releases the held
    rows it found again."""
    result = BatchResult()
    if ids:
        result.touched_roots.add(root_id)
    if brake is not None:
        if walked is not None and root_id in brake.held:
            holds.release_found(conn, root_id, walked, set(ids))
            brake.recount(conn, root_id, result)
        if ids and (
            root_id in brake.held
            or (
                len(ids) >= MASS_MIN_FILES
                and should_hold(len(ids), holds.live_count(conn, root_id), brake.limits)
            )
        ):
            holds.hold(conn, root_id, ids, now)
            brake.recount(conn, root_id, result)
            return result
    if ids:
        result.changes = _mark_missing_ids(conn, ids, now)
        result.vanished = len(result.changes)
    return result


def _confirm_held(conn: Connection, root_id: int, brake: HoldState | None) -> BatchResult:
    result = BatchResult()
    result.changes = [FileChange(i, r, p, "vanished", h) for i, r, p, h in holds.confirm(conn, root_id)]
    result.vanished = len(result.changes)
    result.touched_roots.add(root_id)
    result.held[root_id] = 0
    if brake is not None:
        brake.held.pop(root_id, None)
    return result


def _apply_registrations(
    conn: Connection,
    ops: Sequence[HashedFile | MovedFile | FileFailure],
    now: float,
    brake: HoldState | None = None,
) -> BatchResult:
    result = BatchResult()
    # The last word on a path wins (a file hashed twice in one batch).
    latest = {(op.ref.root_id, op.ref.relpath): op for op in ops}
    result.touched_roots.update({root_id for root_id, _ in latest})
    keys = list(latest)
    live = _live_rows(conn, keys)

    new_contents: dict[str, tuple[str, int, float]] = {}
    kinds: dict[int, str] = {}  # row id -> change kind, for rows that already exist
    updates: list[dict[str, Any]] = []
    inserts: list[tuple[Any, ...]] = []
    replaced: list[int] = []  # live rows whose path another row moves onto
    moved_ids: set[int] = set()
    pending: list[tuple[tuple[int, bytes], HashedFile | FileFailure]] = []

    hashed_files = hashed_bytes = 0
    # Few checks per op, counted in locals: a cold import passes 100,000 ops through here.
    for key, op in latest.items():
        if not isinstance(op, FileFailure):
            content = op.blake3
            if content not in new_contents:
                new_contents[content] = (content, op.stat.size, now)
            if type(op) is HashedFile and op.hashed:
                hashed_files += 1
                hashed_bytes += op.stat.size
        if isinstance(op, MovedFile):
            at_dest = live.get(key)
            if at_dest is not None and at_dest != op.row_id:
                replaced.append(at_dest)
            updates.append({"row_id": op.row_id, **_file_values(op, now)})
            moved_ids.add(op.row_id)
            kinds[op.row_id] = "moved"
            result.moved += 1
            continue
        row_id = live.get(key)
        if row_id is not None:
            updates.append({"row_id": row_id, **_file_values(op, now)})
            kinds[row_id] = "error" if isinstance(op, FileFailure) else "updated"
            result.updated += 1
            if isinstance(op, FileFailure):
                result.errors += 1
            continue
        pending.append((key, op))
    result.hashed_files += hashed_files
    result.hashed_bytes += hashed_bytes

    # New paths: a missing row with the same content moved here; else a missing row at this very
    # path came back; else a new row.
    by_hash: dict[str, list[int]] = {}
    by_path: dict[tuple[int, bytes], int] = {}
    if pending and _any_missing(conn):  # none in a cold import: skip two lookups per path
        by_hash = _missing_by_hash(conn, [op.blake3 for _, op in pending if isinstance(op, HashedFile)])
        by_path = _missing_by_path(conn, [key for key, _ in pending])
    if not by_hash and not by_path:  # nothing missing to come back (a cold import): all new rows
        inserts = [_new_row(op, now) for _, op in pending]
        result.inserted += len(inserts)
        result.errors += sum(type(op) is FileFailure for _, op in pending)
        pending = []
    for key, op in pending:
        target: int | None = None
        if isinstance(op, HashedFile):
            for candidate in by_hash.get(op.blake3, []):
                if candidate not in moved_ids:
                    target = candidate
                    kinds[target] = "moved"
                    result.moved += 1
                    break
        if target is None:
            revived = by_path.get(key)
            if revived is not None and revived not in moved_ids:
                target = revived
                kinds[target] = "error" if isinstance(op, FileFailure) else "revived"
                result.revived += 1
        if isinstance(op, FileFailure):
            result.errors += 1
        if target is None:
            inserts.append(_new_row(op, now))
            result.inserted += 1
        else:
            moved_ids.add(target)
            updates.append({"row_id": target, **_file_values(op, now), "missing_since": None})

    # Content that was already known before this batch: a new path for it is a duplicate.
    known_before: set[str] = set()
    for part in chunks(sorted(new_contents)):
        if _raw_sqlite(conn):
            rows = _rows_in(conn, "SELECT blake3 FROM contents WHERE blake3", (), part)
        else:
            rows = conn.execute(select(contents.c.blake3).where(contents.c.blake3.in_(part)))
        known_before.update(d for (d,) in rows)
    _insert_contents(conn, list(new_contents.values()))
    if replaced:
        gone = _mark_missing_ids(conn, replaced, now)
        result.vanished += len(gone)
        result.changes.extend(gone)
    moved_rows = [row_id for row_id, kind in kinds.items() if kind == "moved"]
    if moved_rows:
        _record_moves(conn, moved_rows, {v["row_id"]: (v["root_id"], v["relpath"]) for v in updates}, now)
    if updates:
        _update_rows(conn, updates)
        # A held row written again is back: its hold ends.
        if brake is not None and brake.held and holds.release(conn, [v["row_id"] for v in updates]):
            for root_id in list(brake.held):
                brake.recount(conn, root_id, result)
        for values in updates:
            row_id = values["row_id"]
            change = FileChange(
                row_id, values["root_id"], values["relpath"], kinds[row_id], values.get("blake3")
            )
            result.changes.append(change)
    seen_in_batch: set[str] = set()
    if inserts:
        duplicates = 0
        changes = result.changes
        for row_id, root_id, relpath, digest in _insert_files(conn, inserts):
            if digest is None:
                changes.append(FileChange(row_id, root_id, relpath, "error"))
                continue
            duplicate = digest in known_before or digest in seen_in_batch
            seen_in_batch.add(digest)
            duplicates += duplicate
            changes.append(FileChange(row_id, root_id, relpath, "new", digest, duplicate))
        result.duplicates += duplicates
    return result


# SQLite result codes (the primary code: the low byte of an extended one) of failures that pass:
# busy or locked by another connection, out of memory, I/O error, disk full, cannot open the
# file (a volume briefly away), a lock-protocol race.
_TRANSIENT_SQLITE_CODES = {5, 6, 7, 10, 13, 14, 15}
_TRANSIENT_WORDS = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
)
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EBUSY}
# PostgreSQL's SQLSTATE classes (and codes) of failures that pass: the connection (08), a
# serialization failure or deadlock (40), no room, memory or connections left (53), the server
# shutting down or starting (57P), a lock not available (55P03), an I/O error (58).
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P", "55P03", "58")
PG_DISK_FULL = "53100"


def _cause(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, BaseException) else error


def is_transient(error: BaseException) -> bool:
    """Will the same statement succeed if tried again later? Locks, a full disk, I/O errors and
    lost connections pass; a constraint violation or bad data never does (SQLite's other result
    codes, SQLAlchemy's IntegrityError, DataError, ProgrammingError, anything else)."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.DisconnectionError | exc.TimeoutError):
        return True
    cause = _cause(error)
    state = getattr(cause, "sqlstate", None)  # PostgreSQL's, through asyncpg
    if isinstance(state, str) and state:
        return state.startswith(_TRANSIENT_SQLSTATES)
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in _TRANSIENT_SQLITE_CODES
        return isinstance(cause, sqlite3.OperationalError) and any(
            word in str(cause).lower() for word in _TRANSIENT_WORDS
        )
    if isinstance(cause, ConnectionError | TimeoutError):
        return True
    if isinstance(cause, OSError):
        return cause.errno in _TRANSIENT_ERRNOS
    # Another database's OperationalError is about the server or the connection, not the data.
    return isinstance(error, exc.OperationalError)


def is_disk_full(error: BaseException, db_file: str | None = None) -> bool:
    """A full disk, said so, or an I/O error on a filesystem with no room left (SQLite reports
    some writes that run out of space as SQLITE_IOERR)."""
    cause = _cause(error)
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if getattr(cause, "sqlstate", None) == PG_DISK_FULL:
        return True
    if not isinstance(cause, sqlite3.Error):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(cause).lower():
        return True
    if db_file is not None and (isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_IOERR):
        try:
            return os.statvfs(os.path.dirname(db_file) or ".").f_bavail == 0
        except OSError:
            return False
    return False


def _describe(op: CatalogOp) -> tuple[str, dict[str, str]]:
    """What an op is about, for a log line, and its journald fields."""
    if isinstance(op, VanishedRows | ConfirmHeld):
        return f"{type(op).__name__} of root {op.root_id}", {}
    path = display(op.ref.relpath)
    return f"{type(op).__name__} of {op.ref.root_name}/{path}", {"root": op.ref.root_name, "path": path}


@dataclass(slots=True)
class _Many:
    """Several ops queued as one item (a walk's batch): one hand-over, not one per file."""

    ops: list[CatalogOp]
    bulk: bool = False


@dataclass
class _Call:
    fn: Callable[[Connection], Any]
    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    error: BaseException | None = None


# What a listener is given: one committed batch of ops. It may be a coroutine function.
Listener = Callable[[BatchResult], Awaitable[None] | None]


class CatalogWriter:
    """Owns every write. `put` queues an op (with back-pressure); `call` runs a function in its
    own transaction after everything queued before it, and returns its value. Registration ends
    here: what a batch of ops committed is announced to the listeners that `subscribe`d (the
    entity mapper, the media stage, the pipeline's counters, the event bus), never handed back
    to a caller."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue_size: int = 2 * BULK_BATCH_MAX,
        clock: Callable[[], float] = time.time,
        host: str = "",
    ) -> None:
        self.engine = engine
        self.clock = clock
        # The server this daemon runs on: the runs it starts are its own (several servers may
        # share the catalog).
        self.host = host
        self._listeners: list[Listener] = []
        # SQLite file: transactions run in a worker thread on a synchronous connection of their
        # own (one at a time: this is the only writer). Otherwise through the async engine.
        self._sync = writer_engine(engine)
        self._thread = anyio.CapacityLimiter(1)
        db_file = sqlite_file(engine) if self._sync is not None else None
        self._checkpointer = Checkpointer(db_file) if db_file is not None else None
        self._checkpointing = False
        self._tg: TaskGroup | None = None
        self._send: MemoryObjectSendStream[CatalogOp | _Many | _Call]
        self._recv: MemoryObjectReceiveStream[CatalogOp | _Many | _Call]
        self._send, self._recv = anyio.create_memory_object_stream[CatalogOp | _Many | _Call](queue_size)
        self.queue_size = queue_size
        self._room = anyio.Event()  # set when pending ops drop below queue_size
        self.pending = 0
        self.last_error: str | None = None
        # The catalog's disk is full, or another process holds its lock: writes wait (and are
        # retried) until space returns or the lock is released; since when they have failed.
        self.disk_full = False
        self.locked = False
        self.failing_since: float | None = None
        # Ops that failed for good (a constraint, bad data) and were dropped, not retried.
        self.dropped = 0
        self._db_file = db_file
        self.totals = BatchResult()
        # The brake on mass disappearance, and the rows it holds per root (read at `run`).
        self.limits = VanishLimits()
        self.held: dict[int, int] = {}

    def subscribe(self, listener: Listener) -> None:
        """`listener` gets the `BatchResult` of every committed batch of ops (not of `call`s),
        in commit order, once the transaction is committed; listeners run one after another in
        the order they subscribed, and the writer takes its next batch when the last returns, so
        a listener should only hand the result on (queue it), never wait on the writer.

        A listener that raises is logged and left out for that batch only: the batch stays
        committed, the other listeners still get it, and the writer goes on (the catalog is
        right; what a failing stage missed, the next reconcile or restart brings back)."""
        self._listeners.append(listener)

    async def _announce(self, result: BatchResult) -> None:
        for listener in self._listeners:
            try:
                maybe = listener(result)
                if maybe is not None:
                    await maybe
            except Exception:
                log.exception("a listener of committed batches failed: %r", listener)

    async def put(self, op: CatalogOp) -> None:
        self.pending += 1
        try:
            # No checkpoint per op while there is room: a cold import puts 100,000 of them.
            self._send.send_nowait(op)
        except anyio.WouldBlock:
            await self._send.send(op)

    async def put_many(self, ops: list[CatalogOp], *, bulk: bool = False) -> None:
        """Queue `ops` as one item, in order. Waits while queue_size ops or more are pending, so
        the bound on memory holds in ops, not items. `bulk`: part of a stream (a walk), which
        the writer commits in larger transactions (BULK_BATCH_MAX)."""
        if not ops:
            return
        while self.pending >= self.queue_size:
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()
        self.pending += len(ops)
        await self._send.send(_Many(ops, bulk))

    async def call(self, fn: Callable[[Connection], T]) -> T:
        item = _Call(fn)
        await self._send.send(item)
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return cast(T, item.value)

    async def flush(self) -> None:
        await self.call(lambda _conn: None)

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._run()
        finally:
            self._tg = None
            if self._checkpointer is not None:
                self._checkpointer.close()
            if self._sync is not None:
                self._sync.dispose()

    def _maybe_checkpoint(self) -> None:
        cp = self._checkpointer
        if cp is None or self._tg is None or self._checkpointing or not cp.due():
            return
        self._checkpointing = True

        async def checkpoint() -> None:
            try:
                await anyio.to_thread.run_sync(cp.run)
            except Exception as exc:  # the writer's own automatic checkpoint is the backstop
                log.warning("background checkpoint failed: %s", exc)
            finally:
                self._checkpointing = False

        self._tg.start_soon(checkpoint)

    async def _run(self) -> None:
        try:
            self.held = await self._transaction(holds.held_counts)
        except Exception as error:  # a hold from before shows again once one is decided or released
            log.warning("cannot read the held rows: %s", error)
        async with self._recv:
            while True:
                try:
                    first = await self._recv.receive()
                except anyio.EndOfStream:
                    return
                batch: list[CatalogOp | _Many | _Call] = [first]
                size = len(first.ops) if isinstance(first, _Many) else 1
                # Linger briefly for more: commits cost far more than rows, and a few ms of
                # latency are nothing next to settle_seconds. A walk's stream lingers longer,
                # but never while its producer is held back by a full queue.
                bulk = isinstance(first, _Many) and first.bulk
                limit, linger = (BULK_BATCH_MAX, BULK_LINGER_S) if bulk else (BATCH_MAX, LINGER_S)
                with anyio.move_on_after(linger):
                    while size < limit and not (bulk and self.pending >= self.queue_size):
                        try:
                            item = self._recv.receive_nowait()
                        except anyio.WouldBlock:
                            if isinstance(batch[-1], _Call):
                                break  # someone awaits this call: do not hold it back
                            try:
                                item = await self._recv.receive()
                            except anyio.EndOfStream:
                                break
                        except anyio.EndOfStream:
                            break
                        batch.append(item)
                        size += len(item.ops) if isinstance(item, _Many) else 1
                await self._apply(batch)

    async def _apply(self, batch: list[CatalogOp | _Many | _Call]) -> None:
        ops: list[CatalogOp] = []
        for item in batch:
            if isinstance(item, _Call):
                if ops:
                    await self._commit_ops(ops)
                    ops = []
                await self._run_call(item)
            elif isinstance(item, _Many):
                ops += item.ops
            else:
                ops.append(item)
        if ops:
            await self._commit_ops(ops)

    async def _commit_ops(self, ops: list[CatalogOp]) -> None:
        result = await self._commit_or_isolate(ops)
        self._maybe_checkpoint()
        self.totals.add(dataclasses.replace(result, changes=[], held={}))  # counts only
        try:
            await self._announce(result)
        finally:
            # Only now: status shows nothing "writing" once the stages after it have the changes.
            self.pending -= len(ops)
            if self.pending < self.queue_size:
                self._room.set()

    async def _commit_or_isolate(self, ops: list[CatalogOp]) -> BatchResult:
        """The batch in one transaction; if it fails for good, each op in a transaction of its
        own, so one bad item fails alone with its reason and the rest go in."""
        outcome = await self._commit_retrying(ops)
        if isinstance(outcome, BatchResult):
            return outcome
        if len(ops) == 1:
            return await self._fail_op(ops[0], outcome)
        log.warning(
            "a batch of %d catalog writes failed (%s: %s): writing them one at a time",
            len(ops),
            type(outcome).__name__,
            outcome,
        )
        total = BatchResult()
        for op in ops:
            one = await self._commit_retrying([op])
            total.add(one if isinstance(one, BatchResult) else await self._fail_op(op, one))
        return total

    async def _commit_retrying(self, ops: list[CatalogOp]) -> BatchResult | Exception:
        """Commit `ops`; a transient failure is retried with a doubling back-off (the pipeline
        waits meanwhile: back-pressure), and status says why. A permanent one is returned."""
        delay = 0.5
        while True:
            now = self.clock()
            brake = HoldState(self.limits, dict(self.held))
            try:
                result = await self._transaction(functools.partial(apply_ops, ops=ops, now=now, brake=brake))
            except Exception as error:
                if not is_transient(error):
                    return error
                self.last_error = failure_text(error)
                self.disk_full = is_disk_full(error, self._db_file)
                self.locked = is_locked(error)
                if self.failing_since is None:
                    self.failing_since = self.clock()
                log.error("catalog write failed, retrying in %.1fs: %s", delay, self.last_error)
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self.last_error is not None:
                log.info("catalog writes go through again")
            self.last_error = None
            self.disk_full = self.locked = False
            self.failing_since = None
            self.held = brake.held
            return result

    async def _fail_op(self, op: CatalogOp, error: Exception) -> BatchResult:
        """One op the catalog refuses for good. A file's registration becomes an `error` row
        with the reason (as a file that cannot be read does); anything else (a failure row, a
        deletion, a confirmation) is dropped with a logged error: the next reconcile redoes it."""
        reason = f"catalog refused the write: {failure_text(error)}"[:2000]
        what, extra = _describe(op)
        if isinstance(op, HashedFile | MovedFile):
            log.error("%s: %s", what, reason, extra=extra)
            outcome = await self._commit_retrying([FileFailure(op.ref, op.stat, reason)])
            if isinstance(outcome, BatchResult):
                return outcome
            reason = f"{reason}; and as an error row: {failure_text(outcome)}"[:2000]
        log.error("dropped %s: %s", what, reason, extra=extra)
        self.dropped += 1
        return BatchResult()

    async def _transaction(self, fn: Callable[[Connection], T]) -> T:
        """`fn` in one transaction, committed when it returns."""
        sync = self._sync
        if sync is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)

        def run() -> T:
            with thread_named("importd-writer"), sync.begin() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._thread)

    async def _run_call(self, item: _Call) -> None:
        try:
            item.value = await self._transaction(item.fn)
        except Exception as exc:
            item.error = exc
        finally:
            item.done.set()
