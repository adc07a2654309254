import os
from pathlib import Path

from importd.catalog.queries import KnownFile
from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.pipeline.items import FileStat, s64
from importd.pipeline.reconcile import ReconcileComparer, WalkedFile, WalkedLink, WalkError, walk

IGNORE = IgnoreRules(DEFAULT_IGNORES)


def items(root: Path, start: bytes = b"") -> list[object]:
    return list(walk(os.fsencode(str(root)), start, IGNORE))


def test_walk_lists_files_links_and_skips_ignored(tmp_path: Path) -> None:
    (tmp_path / "a" / "@eaDir").mkdir(parents=True)
    (tmp_path / "a" / "@eaDir" / "thumb.jpg").write_bytes(b"x")
    (tmp_path / "a" / "f.mkv").write_bytes(b"12345")
    (tmp_path / "a" / "f.mkv.part").write_bytes(b"1")
    (tmp_path / ".DS_Store").write_bytes(b"1")
    os.symlink("a", tmp_path / "link")
    os.symlink("loop", tmp_path / "loop")
    os.mkfifo(tmp_path / "fifo")
    got = items(tmp_path)
    files = sorted(i.relpath for i in got if isinstance(i, WalkedFile))
    links = sorted(i.relpath for i in got if isinstance(i, WalkedLink))
    assert files == [b"a/f.mkv"]
    assert links == [b"link", b"loop"]
    f = next(i for i in got if isinstance(i, WalkedFile))
    assert f.stat.size == 5


def test_walk_of_a_subtree_and_of_one_file(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x").write_bytes(b"x")
    (tmp_path / "y").write_bytes(b"y")
    assert [i.relpath for i in items(tmp_path, b"a")] == [b"a/b/x"]  # type: ignore[attr-defined]
    assert [i.relpath for i in items(tmp_path, b"y")] == [b"y"]  # type: ignore[attr-defined]
    assert items(tmp_path, b"nothing") == []


def test_walk_keeps_raw_names(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path))
    for name in (b"caf\xe9", b"new\nline", b"ok"):
        with open(raw + b"/" + name, "wb") as fh:
            fh.write(b"1")
    assert sorted(i.relpath for i in items(tmp_path)) == [b"caf\xe9", b"new\nline", b"ok"]  # type: ignore[attr-defined]


def test_unreadable_directory_is_an_error_not_a_deletion(tmp_path: Path) -> None:
    if os.getuid() == 0:
        import pytest

        pytest.skip("root reads everything; covered by the integration test with setpriv")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x").write_bytes(b"1")
    (tmp_path / "locked").chmod(0)
    try:
        got = items(tmp_path)
        assert any(isinstance(i, WalkError) and i.relpath == b"locked" for i in got)
    finally:
        (tmp_path / "locked").chmod(0o755)


def known(row_id: int, st: FileStat, status: str = "present") -> KnownFile:
    return KnownFile(row_id, st.size, st.mtime_ns, s64(st.inode), s64(st.dev), status)


def test_comparer_sends_only_changes_and_lists_vanished() -> None:
    same = FileStat(10, 5, 5, 100, 1)
    changed_old = FileStat(10, 5, 5, 101, 1)
    changed_new = FileStat(11, 6, 6, 101, 1)
    errored = FileStat(3, 3, 3, 102, 1)
    snapshot = {
        b"same": known(1, same),
        b"changed": known(2, changed_old),
        b"gone": known(3, same),
        b"err": known(4, errored, "error"),
        b"blocked/inside": known(5, same),
        b"junk.part": known(6, same),
    }
    c = ReconcileComparer(snapshot)
    out = [
        c.feed(WalkedFile(b"same", same)),
        c.feed(WalkedFile(b"changed", changed_new)),
        c.feed(WalkedFile(b"new", same)),
        c.feed(WalkedFile(b"err", errored)),
        c.feed(WalkError(b"blocked", "permission denied")),
    ]
    assert [o.relpath if o else None for o in out] == [None, b"changed", b"new", b"err", None]
    diff = c.finish(IGNORE)
    assert diff.vanished == [3], "unreadable subtrees and now-ignored paths are not vanished"
    assert diff.seen == 4


def test_comparer_handles_unsigned_64_bit_inodes() -> None:
    big = FileStat(1, 1, 1, (1 << 64) - 5, 1)
    c = ReconcileComparer({b"x": known(1, big)})
    assert c.feed(WalkedFile(b"x", big)) is None
