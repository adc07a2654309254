"""The maintenance side's view of the catalog: repair candidates from a real catalog, and the
links a walk met as the catalog records them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.catalog.maintenance import SymlinkSeen
from importd.catalog.roots import ensure_roots
from importd.catalog.writer import apply_ops
from importd.items import FileRef, FileStat, HashedFile, MovedFile, Vanished
from importd.maintenance.links import LastKnown, LinkError, LinkInfo, Move
from importd.maintenance.operations import CatalogCandidates, seen_links

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        ensure_roots(c, "h", [("r", "/srv/r"), ("s", "/srv/s")])
        ops = [
            HashedFile(FileRef(1, "r", b"old/a.jpg"), FileStat(10, 1, 1, 1, 7), H1),
            HashedFile(FileRef(1, "r", b"b.jpg"), FileStat(20, 1, 1, 2, 7), H2),
            HashedFile(FileRef(2, "s", b"x/b.jpg"), FileStat(20, 1, 1, 3, 7), H2),
            HashedFile(FileRef(2, "s", b"y/b.jpg"), FileStat(21, 1, 1, 4, 7), H3),
        ]
        apply_ops(c, ops, 1.0)
        apply_ops(c, [MovedFile(FileRef(2, "s", b"new/a.jpg"), FileStat(10, 1, 1, 1, 7), 1, H1)], 2.0)
        apply_ops(c, [Vanished(FileRef(1, "r", b"b.jpg"))], 3.0)
        yield c
    engine.dispose()


def candidates(conn: Connection) -> CatalogCandidates:
    return CatalogCandidates(conn, {"r": (1, b"/srv/r"), "s": (2, b"/srv/s")})


def test_moves_and_last_known(conn: Connection) -> None:
    source = candidates(conn)
    assert source.moves_from("r", b"old") == [Move(b"old/a.jpg", b"/srv/s/new/a.jpg", 2.0)]
    assert source.moves_from("nope", b"old") == []
    assert source.last_known("r", b"old/a.jpg") == LastKnown(10, H1)
    assert source.last_known("r", b"b.jpg") == LastKnown(20, H2), "a missing row still tells"
    assert source.last_known("r", b"never") is None and source.last_known("nope", b"b.jpg") is None


def test_by_name_size_and_hash(conn: Connection) -> None:
    source = candidates(conn)
    assert source.by_name_and_size(b"b.jpg", 20) == [b"/srv/s/x/b.jpg"], "present files only"
    assert sorted(source.by_name_and_size(b"b.jpg", None)) == [b"/srv/s/x/b.jpg", b"/srv/s/y/b.jpg"]
    assert source.by_hash(H2) == [b"/srv/s/x/b.jpg"]
    assert source.by_hash("f" * 64) == []
    # Roots the proposal does not know are left out.
    assert CatalogCandidates(conn, {"r": (1, b"/srv/r")}).by_hash(H2) == []


def test_seen_links_keeps_what_the_catalog_records() -> None:
    ok = LinkInfo("r", b"l", b"/srv/r/l", b"t", b"/srv/r/t", "ok")
    broken = LinkInfo("r", b"m", b"/srv/r/m", b"../gone", b"/srv/gone", "broken")
    error = LinkError("r", b"n", b"/srv/r/n", "gone")
    assert seen_links([ok, error, broken]) == [
        SymlinkSeen(b"l", b"t", b"/srv/r/t", "ok"),
        SymlinkSeen(b"m", b"../gone", b"/srv/gone", "broken"),
    ]
