"""A real SQLite catalog file with one root, for the family modules' tests: written through a
synchronous connection (as the writer does), read back through an `AsyncSession` (as the API
does)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from importd.catalog.roots import ensure_roots
from importd.catalog.writer import apply_ops
from importd.items import FileFailure, FileRef, FileStat, HashedFile

T = TypeVar("T")


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    SQLModel.metadata.create_all(engine)
    with engine.connect() as c:
        ensure_roots(c, "h", [("r", "/srv/r")])
        yield c
    engine.dispose()


def read(conn: Connection, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Commit what the test wrote, then `fn(session, *args)` on an AsyncSession of its own."""
    conn.commit()

    async def run() -> T:
        engine = create_async_engine(f"sqlite+aiosqlite:///{conn.engine.url.database}")
        try:
            async with AsyncSession(engine) as session:
                return await fn(session, *args)
        finally:
            await engine.dispose()

    return anyio.run(run)


def on_postgresql(url: str, fn: Callable[[Connection], T]) -> T:
    """`fn` on a PostgreSQL catalog (migrated as importd does, with the root "r"), on the async
    engine's connection as the writer uses it there (`run_sync`), committed."""
    from importd.catalog.engine import create_engine as catalog_engine
    from importd.catalog.engine import migrate

    def with_root(conn: Connection) -> T:
        ensure_roots(conn, "h", [("r", "/srv/r")])
        return fn(conn)

    async def run() -> T:
        engine = catalog_engine(url)
        try:
            await migrate(engine)
            async with engine.begin() as conn:
                return await conn.run_sync(with_root)
        finally:
            await engine.dispose()

    return anyio.run(run)


def register(conn: Connection, files: dict[bytes, str], now: float = 1.0, inode: int = 1) -> None:
    """Register files (relpath -> BLAKE3; "" for a file that could not be read) in one batch."""
    ops: list[HashedFile | FileFailure] = []
    for i, (relpath, digest) in enumerate(files.items(), inode):
        stat = FileStat(10 + i, 1000 + i, 1000, i, 7)
        ref = FileRef(1, "r", relpath)
        ops.append(HashedFile(ref, stat, digest) if digest else FileFailure(ref, stat, "denied"))
    apply_ops(conn, ops, now)
