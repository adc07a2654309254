"""The `files` table (one row per path) and the content it points at: the rows a walk is
compared with (read in path order as it goes), the identity lookup (rename, move and hard-link
detection), status counts, find by path, by hash and by error, and forgetting rows marked missing
(`importctl forget`, and its undo). The writer's registration statements, which change these
rows, are in `writer.py`.

Two reads have a second spelling on a plain `sqlite3` connection, because they are the hot paths
of a walk: `known_rows` (every row of a root at every start-up, read ahead by a thread of its own)
and `identities_sqlite` (a lookup per batch of the walk's fast lane). Each stands beside its
portable spelling, and a test keeps the two giving the same answer.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy import ColumnElement, TextClause, and_, func, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncResult
from sqlmodel import col
from sqlmodel import select as typed_select
from sqlmodel.ext.asyncio.session import AsyncSession

from importd.catalog.engine import open_reader, sqlite_file
from importd.catalog.models import (
    GONE_PATH_WHERE,
    GONE_STATUSES,
    LIVE_PATH_WHERE,
    STATUS_ERROR,
    STATUS_FORGOTTEN,
    STATUS_MISSING,
    FileRow,
)
from importd.catalog.tables import chunks, file_counts, files, roots
from importd.items import KnownRow, KnownRows, s64
from importd.paths import subtree_bounds


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


def _stream_sql(root_id: int, prefix: bytes | None, sqlite: bool) -> tuple[str, str, dict[str, Any]]:
    """The live rows of a root (or of the subtree at `prefix`) in relpath order: present rows
    with only the columns the comparison needs, and the relpaths of rows in error."""
    cond, params = "root_id = :root", dict[str, Any](root=root_id)
    if prefix:
        # One range of the path index, [prefix, prefix + '0'), then `prefix-x` and `prefix.x` (which
        # sort below `prefix/`) filtered out: with `range OR = prefix` SQLite read the whole root.
        low, high = subtree_bounds(prefix)
        cond += " AND relpath >= :prefix AND relpath < :high AND (relpath = :prefix OR relpath >= :low)"
        params |= {"low": low, "high": high, "prefix": prefix}
    # `+status`: not through ix_files_status (the path index gives the order). The unary `+` on
    # text is SQLite's alone (PostgreSQL has no such operator, and its planner chooses well).
    status = "+status" if sqlite else "status"
    present = f"SELECT relpath, size, mtime_ns, inode, dev FROM files WHERE {cond} AND {status} = 'present'"
    errors = f"SELECT relpath FROM files WHERE {cond} AND status = 'error'"
    if sqlite:
        # The partial unique index on (root_id, relpath) gives the rows in order with no sort;
        # SQLite uses a partial index only when the query repeats the index's own condition.
        present += f" AND {LIVE_PATH_WHERE}"
    return present + " ORDER BY relpath", errors + " ORDER BY relpath", params


# Rows per chunk of a streamed read, and chunks read ahead of the walk (~1.5 MB at most).
ROW_CHUNK = 4096
PREFETCH_CHUNKS = 4


class _SqliteKnownRows:
    """`KnownRows` from a SQLite catalog: a thread of its own reads chunks ahead of the walk on a
    read-only connection, in one read transaction (the walk compares with one catalog state)."""

    def __init__(self, db_file: str, root_id: int, prefix: bytes | None) -> None:
        self._sql = _stream_sql(root_id, prefix, sqlite=True)
        self._db_file = db_file
        self._chunks: queue.Queue[list[KnownRow] | BaseException | None] = queue.Queue(PREFETCH_CHUNKS)
        self._errors: Future[list[bytes]] = Future()
        self._closed = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name="importd-catalog-read", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        present, errors, params = self._sql
        try:
            conn = open_reader(self._db_file)
            try:
                conn.execute("BEGIN")
                self._errors.set_result([r[0] for r in conn.execute(errors, params)])
                cursor = conn.execute(present, params)
                while not self._closed.is_set() and (rows := cursor.fetchmany(ROW_CHUNK)):
                    self._put(rows)
            finally:
                conn.close()
            self._put(None)
        except BaseException as exc:  # handed to the walk's thread, raised there
            if not self._errors.done():
                self._errors.set_exception(exc)
            self._put(exc)

    def _put(self, item: list[KnownRow] | BaseException | None) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(queue.Full):
                self._chunks.put(item, timeout=0.2)
                return

    def in_error(self) -> list[bytes]:
        return self._errors.result()

    def next_chunk(self) -> list[KnownRow] | None:
        if self._ended:
            return None
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
        return item

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


class _EngineKnownRows:
    """`KnownRows` through the async engine (PostgreSQL): each chunk fetched on the event loop
    from a server-side cursor, called from the walk's thread."""

    def __init__(self, engine: AsyncEngine, root_id: int, prefix: bytes | None) -> None:
        self._engine = engine
        self._sql = _stream_sql(root_id, prefix, sqlite=False)
        self._conn: AsyncConnection | None = None
        self._result: AsyncResult[*tuple[Any, ...]] | None = None
        self._errors: list[bytes] | None = None
        self._ended = False

    async def _open(self) -> None:
        present, errors, params = self._sql
        self._conn = conn = await self._engine.connect()
        self._errors = [bytes(r[0]) for r in await conn.execute(text(errors), params)]
        self._result = await conn.stream(text(present), params)

    async def _fetch(self) -> list[KnownRow] | None:
        assert self._result is not None
        rows = await self._result.fetchmany(ROW_CHUNK)
        return [(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in rows] or None

    async def _close(self) -> None:
        if self._result is not None:
            await self._result.close()
        if self._conn is not None:
            await self._conn.close()
        self._result = self._conn = None

    def in_error(self) -> list[bytes]:
        if self._errors is None:
            anyio.from_thread.run(self._open)
        assert self._errors is not None
        return self._errors

    def next_chunk(self) -> list[KnownRow] | None:
        if self._ended:
            return None
        self.in_error()
        rows = anyio.from_thread.run(self._fetch)
        if rows is None:
            self._ended = True
            anyio.from_thread.run(self._close)
        return rows

    def close(self) -> None:
        self._ended = True
        if self._conn is not None:
            anyio.from_thread.run(self._close)


def known_rows(engine: AsyncEngine, root_id: int, prefix: bytes | None) -> KnownRows:
    """The live rows of a root (or of the subtree at `prefix`) in relpath order, for a walk's
    thread: on a SQLite file read ahead by a thread of their own, elsewhere through the loop."""
    if (db_file := sqlite_file(engine)) is not None:
        return _SqliteKnownRows(db_file, root_id, prefix)
    return _EngineKnownRows(engine, root_id, prefix)


def _inodes_by_device(keys: list[tuple[int, int]]) -> list[tuple[int, Sequence[int]]]:
    """(dev, inodes) for each device, inodes sorted and in chunks that fit one IN list; both as
    the catalog stores them (signed)."""
    by_dev: dict[int, set[int]] = {}
    for dev, ino in keys:
        by_dev.setdefault(s64(dev), set()).add(s64(ino))
    return [(dev, part) for dev, inodes in by_dev.items() for part in chunks(sorted(inodes))]


def identities(conn: Connection, keys: list[tuple[int, int]], host: str) -> list[IdentityMatch]:
    """This host's rows (any status but forgotten) with one of the given (dev, inode) identities:
    another server's inode numbers say nothing about this one's files. Grouped by device so each
    query seeks the (dev, inode) index instead of scanning it. A forgotten row never comes back
    by itself, not even as a move: a file that turns up with its inode is new."""
    out: list[IdentityMatch] = []
    ours = select(roots.c.id).where(roots.c.host == host).scalar_subquery()
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
            ).where(
                files.c.dev == dev,
                files.c.inode.in_(part),
                files.c.status != STATUS_FORGOTTEN,
                files.c.root_id.in_(ours),
            )
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


def identities_sqlite(
    conn: sqlite3.Connection, keys: list[tuple[int, int]], host: str
) -> list[IdentityMatch]:
    """`identities` on a plain sqlite3 connection (`open_reader`), for a walk's own thread."""
    out: list[IdentityMatch] = []
    for dev, part in _inodes_by_device(keys):
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            "SELECT id, root_id, relpath, size, mtime_ns, inode, dev, blake3, status FROM files"
            f" WHERE dev = ? AND inode IN ({marks}) AND status != 'forgotten'"
            " AND root_id IN (SELECT id FROM roots WHERE host = ?)",
            (dev, *part, host),
        )
        out.extend(IdentityMatch(i, r, bytes(p), *rest) for i, r, p, *rest in rows)
    return out


def status_counts(conn: Connection) -> dict[int, dict[str, tuple[int, int]]]:
    """{root_id: {status: (files, bytes)}}, from the counts the triggers keep (a few rows, however
    many files)."""
    return _by_root(
        conn.execute(
            select(
                file_counts.c.root_id, file_counts.c.status, file_counts.c.files, file_counts.c.bytes
            ).where(file_counts.c.files != 0)
        )
    )


def counted_statuses(conn: Connection) -> dict[int, dict[str, tuple[int, int]]]:
    """The same counted from the rows themselves: what the kept counts must always equal."""
    return _by_root(
        conn.execute(
            select(
                files.c.root_id, files.c.status, func.count(), func.coalesce(func.sum(files.c.size), 0)
            ).group_by(files.c.root_id, files.c.status)
        )
    )


def _by_root(rows: Iterable[Any]) -> dict[int, dict[str, tuple[int, int]]]:
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for root_id, status, count, size in rows:
        out.setdefault(root_id, {})[status] = (int(count), int(size))
    return out


# What `importctl find`, `info` and `errors` show of a row (the reply shapes are built from these).
# Columns, not `select(FileRow)`: building a model per row made a find of 1,000 rows 1.5 times
# slower (measured on a catalog of 100,000 files).
_FOUND: tuple[Any, ...] = (
    FileRow.id, FileRow.root_id, FileRow.relpath, FileRow.size, FileRow.blake3, FileRow.status,
    FileRow.first_seen, FileRow.last_seen, FileRow.missing_since, FileRow.error, FileRow.mtime_ns,
    FileRow.inode, FileRow.dev,
)  # fmt: skip


async def _found(
    session: AsyncSession,
    *where: ColumnElement[bool] | TextClause | bool,
    limit: int,
    forgotten: bool = True,
    order: tuple[Any, ...] = (col(FileRow.root_id), col(FileRow.relpath), col(FileRow.id)),
) -> list[dict[str, Any]]:
    if not forgotten:
        where = (*where, FileRow.status != STATUS_FORGOTTEN)
    stmt = typed_select(*_FOUND).where(*where).order_by(*order).limit(limit)
    return [dict(r._mapping) | {"relpath": bytes(r.relpath)} for r in await session.exec(stmt)]


async def _found_by_path(
    session: AsyncSession, root_id: int, *where: ColumnElement[bool] | bool, limit: int, forgotten: bool
) -> list[dict[str, Any]]:
    """Rows of a root whose path meets `where`, in path order: the live ones and the gone ones
    read apart, each through the partial path index of its statuses. One query over both read
    every row of the root instead (0.4 s at a million files). A live path holds one row, so the
    live rows come in index order and the limit stops the read."""
    live = await _found(
        session,
        FileRow.root_id == root_id,
        *where,
        text(LIVE_PATH_WHERE),
        limit=limit,
        order=(col(FileRow.root_id), col(FileRow.relpath)),
    )
    gone = await _found(
        session, FileRow.root_id == root_id, *where, text(GONE_PATH_WHERE), limit=limit, forgotten=forgotten
    )
    rows = live + gone
    rows.sort(key=lambda r: (r["root_id"], r["relpath"], r["id"]))
    return rows[:limit]


async def find_path(
    session: AsyncSession, root_id: int, relpath: bytes, limit: int, *, forgotten: bool = True
) -> list[dict[str, Any]]:
    """Rows at the path (live first, then its missing history), or below it when a folder.
    `forgotten` False leaves forgotten rows out (`find` without `--all`)."""
    exact = await _found_by_path(
        session, root_id, FileRow.relpath == relpath, limit=limit, forgotten=forgotten
    )
    if exact:
        exact.sort(key=lambda r: (r["status"] in GONE_STATUSES, -(r["missing_since"] or 0)))
        return exact
    low, high = subtree_bounds(relpath) if relpath else (b"", b"\xff" * 8)
    return await _found_by_path(
        session,
        root_id,
        col(FileRow.relpath) >= low,
        col(FileRow.relpath) < high,
        limit=limit,
        forgotten=forgotten,
    )


async def find_hash(
    session: AsyncSession,
    prefix: str,
    limit: int,
    *,
    forgotten: bool = True,
    root_ids: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """Rows whose content's BLAKE3 starts with `prefix`; with `root_ids`, under those roots only."""
    prefix = prefix.lower()
    within: tuple[Any, ...] = () if root_ids is None else (col(FileRow.root_id).in_(sorted(root_ids)),)
    if len(prefix) == 64:
        return await _found(session, FileRow.blake3 == prefix, *within, limit=limit, forgotten=forgotten)
    return await _found(
        session,
        *within,
        col(FileRow.blake3) >= prefix,
        col(FileRow.blake3) < prefix + "g",
        limit=limit,
        forgotten=forgotten,
    )


async def error_rows(session: AsyncSession, limit: int, root_ids: Collection[int]) -> list[dict[str, Any]]:
    """Rows in error under these roots (this server's: another's errors are its operator's)."""
    return await _found(
        session, FileRow.status == STATUS_ERROR, col(FileRow.root_id).in_(sorted(root_ids)), limit=limit
    )


@dataclass(frozen=True, slots=True)
class GoneRow:
    """A row marked missing or forgotten, as `importctl forget` shows it."""

    row_id: int
    relpath: bytes
    missing_since: float | None


def forget(conn: Connection, root_id: int, relpath: bytes, *, undo: bool, dry_run: bool) -> list[GoneRow]:
    """The rows marked missing at `relpath` or under it (the whole root for b"") become
    forgotten, in the caller's transaction; with `undo`, the forgotten ones become missing
    again (their `missing_since` kept). `dry_run`: only which rows, nothing changed. Rows are
    never deleted. Returns the rows, by path."""
    source, dest = (STATUS_FORGOTTEN, STATUS_MISSING) if undo else (STATUS_MISSING, STATUS_FORGOTTEN)
    where: list[ColumnElement[bool]] = [files.c.root_id == root_id, files.c.status == source]
    if relpath:
        low, high = subtree_bounds(relpath)
        where.append(or_(files.c.relpath == relpath, and_(files.c.relpath >= low, files.c.relpath < high)))
    rows = [
        GoneRow(row_id, bytes(rel), since)
        for row_id, rel, since in conn.execute(
            select(files.c.id, files.c.relpath, files.c.missing_since)
            .where(*where)
            .order_by(files.c.relpath, files.c.id)
        )
    ]
    if not dry_run:
        for part in chunks([r.row_id for r in rows]):
            conn.execute(
                update(files).where(files.c.id.in_(part), files.c.status == source).values(status=dest)
            )
    return rows
