"""A real SQLite catalog in memory, with one root, for the family modules' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.catalog.roots import ensure_roots
from importd.catalog.writer import apply_ops
from importd.items import FileFailure, FileRef, FileStat, HashedFile


@pytest.fixture
def catalog() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        ensure_roots(c, [("r", "/srv/r")])
        yield c
    engine.dispose()


def register(conn: Connection, files: dict[bytes, str], now: float = 1.0, inode: int = 1) -> None:
    """Register files (relpath -> BLAKE3; "" for a file that could not be read) in one batch."""
    ops: list[HashedFile | FileFailure] = []
    for i, (relpath, digest) in enumerate(files.items(), inode):
        stat = FileStat(10 + i, 1000 + i, 1000, i, 7)
        ref = FileRef(1, "r", relpath)
        ops.append(HashedFile(ref, stat, digest) if digest else FileFailure(ref, stat, "denied"))
    apply_ops(conn, ops, now)
