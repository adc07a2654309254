"""The suggested keeper: the largest resolution, then the oldest, then the first by path."""

from __future__ import annotations

from importd.report.content import Member, choose_keeper


def m(path: bytes, w: int | None = None, h: int | None = None, mtime: float | None = None) -> Member:
    return Member(path, "0" * 64, 0.0, width=w, height=h, mtime=mtime)


def test_the_largest_resolution_wins_whatever_its_age() -> None:
    keeper = choose_keeper([m(b"old small", 320, 240, 1.0), m(b"new big", 640, 480, 9.0)])
    assert (keeper.index, keeper.reason) == (1, "largest resolution (640×480)")


def test_among_the_largest_the_oldest_wins() -> None:
    members = [m(b"a", 640, 480, 5.0), m(b"b", 640, 480, 2.0), m(b"c", 320, 240, 1.0)]
    keeper = choose_keeper(members)
    assert keeper.index == 1
    assert keeper.reason == "largest resolution (640×480), then oldest (modified 1970-01-01 00:00 UTC)"


def test_copies_of_one_content_keep_the_oldest() -> None:
    keeper = choose_keeper([m(b"copy", mtime=8.0), m(b"original", mtime=3.0)])
    assert keeper.index == 1 and keeper.reason.startswith("oldest (modified ")
    same = choose_keeper([m(b"b", 10, 10, 4.0), m(b"a", 10, 10, 4.0)])
    assert same.index == 1 and same.reason == "same resolution; first by path (same age)"
    unknown = choose_keeper([m(b"b"), m(b"a")])
    assert unknown.index == 1 and unknown.reason == "first by path (same age)"
