import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.items import FileStat, KnownRow, s64
from importd.pipeline import reconcile
from importd.pipeline.reconcile import (
    DirListing,
    Signature,
    StreamComparer,
    WalkedFile,
    WalkedLink,
    WalkError,
    walk,
    walk_listings,
)
from tests.unit.importd.listed_rows import ListedRows

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


def sig(st: FileStat) -> Signature:
    return (st.size, st.mtime_ns, s64(st.inode), s64(st.dev))


def rows(known: dict[bytes, Signature]) -> dict[bytes, KnownRow]:
    return {relpath: (relpath, *signature) for relpath, signature in known.items()}


def listing(prefix: bytes, *files: tuple[bytes, FileStat], errors: tuple[WalkError, ...] = ()) -> DirListing:
    pending = reconcile._PyDirFiles([(name, sig(st), st.ctime_ns) for name, st in files])
    return DirListing(prefix, pending, IGNORE, errors=list(errors))


def known(signatures: dict[bytes, Signature], in_error: tuple[bytes, ...] = (), chunk: int = 2) -> ListedRows:
    return ListedRows(list(rows(signatures).values()), in_error, chunk)


def test_comparer_sends_only_changes_and_lists_vanished() -> None:
    same = FileStat(10, 5, 5, 100, 1)
    changed_old = FileStat(10, 5, 5, 101, 1)
    changed_new = FileStat(11, 6, 6, 101, 1)
    errored = FileStat(3, 3, 3, 102, 1)
    catalog = known(
        {
            b"same": sig(same),
            b"changed": sig(changed_old),
            b"gone": sig(same),
            b"blocked/inside": sig(same),
            b"junk.part": sig(same),
            b"d/kept": sig(same),
        },
        (b"err", b"err-gone"),
    )
    c = StreamComparer(catalog, IGNORE, keep_changed=True)
    root = listing(
        b"",
        (b"same", same),
        (b"changed", changed_new),
        (b"new", same),
        (b"err", errored),
        errors=(WalkError(b"blocked", "permission denied"),),
    )
    out = c.feed(replace(root, upto=b"d/"))
    assert [o.relpath for o in out] == [b"changed"], "err and new sort after d/: they wait for its rows"
    assert out[0].stat == changed_new
    assert [o.relpath for o in c.feed(listing(b"d/", (b"kept", same)))] == [b"err", b"new"]
    assert c.finish() == []
    diff = c.diff
    assert sorted(diff.vanished) == [b"err-gone", b"gone"], "unreadable subtrees and ignored paths stay"
    assert diff.seen == 5 and diff.changed_count == 3
    assert diff.catalog_status == {b"changed": "present", b"err": "error"}, "new is not in the catalog"


def test_comparer_handles_unsigned_64_bit_inodes() -> None:
    big = FileStat(1, 1, 1, (1 << 64) - 5, 1)
    c = StreamComparer(known({b"x": sig(big)}), IGNORE)
    assert c.feed(listing(b"", (b"x", big))) == []
    walked = WalkedFile(b"x", sig(big), 1)
    assert walked.stat == big, "the kernel's unsigned inode comes back from the signed signature"


def odd_tree(root: Path) -> None:
    raw = os.fsencode(str(root))
    os.makedirs(raw + b"/d\xe9j\xe0/sub")
    for name in (b"caf\xe9", b"new\nline", b"d\xe9j\xe0/sub/x.mkv", b"d\xe9j\xe0/y.tmp", b"empty"):
        with open(raw + b"/" + name, "wb") as fh:
            fh.write(b"12" if name != b"empty" else b"")
    os.symlink(b"caf\xe9", raw + b"/link")
    os.symlink(b"nowhere", raw + b"/d\xe9j\xe0/broken")
    os.mkfifo(raw + b"/fifo")
    (root / "@eaDir").mkdir()
    (root / "@eaDir" / "thumb").write_bytes(b"1")


def taken(read: reconcile.DirRead | OSError) -> list[list[Any]]:
    assert not isinstance(read, OSError)
    files, dirs, links, errors = read
    return [sorted(files.take(b"")[0]), sorted(dirs), sorted(links), sorted(errors)]


@pytest.mark.skipif(reconcile.read_dirs is reconcile._read_dirs_python, reason="C extension not built")
def test_native_directory_reader_matches_os_scandir(tmp_path: Path) -> None:
    odd_tree(tmp_path)
    raw = os.fsencode(str(tmp_path))
    paths = [raw, raw + b"/d\xe9j\xe0", raw + b"/d\xe9j\xe0/sub", raw + b"/missing", raw + b"/empty"]
    assert reconcile.read_dirs.__module__ == "importd.pipeline._dirreader"
    native, python = reconcile.read_dirs(paths), reconcile._read_dirs_python(paths)
    for a, b in zip(native[:3], python[:3], strict=True):
        assert taken(a) == taken(b)
    for a, b in zip(native[3:], python[3:], strict=True):
        assert isinstance(a, OSError) and isinstance(b, OSError)
        assert (type(a), a.errno, a.filename) == (type(b), b.errno, b.filename)
    assert isinstance(native[3], FileNotFoundError) and isinstance(native[4], NotADirectoryError)
    with pytest.raises(ValueError):
        reconcile.read_dirs([raw + b"\0x"])
    with pytest.raises(TypeError):
        reconcile.read_dirs([str(tmp_path)])  # type: ignore[list-item]


def test_readers_compare_with_the_catalog_as_they_take(tmp_path: Path) -> None:
    """Unchanged files are popped and counted; changed and unknown ones are listed (and
    popped); rows for other paths stay."""
    odd_tree(tmp_path)
    raw = os.fsencode(str(tmp_path))
    files = reconcile._read_dir_python(raw)[0].take(b"")[0]
    readers = {
        "native": lambda: reconcile.read_dirs([raw])[0],
        "python": lambda: reconcile._read_dir_python(raw),
    }
    catalog = {name: signature for name, signature, _ in files}
    changed = next(name for name in catalog if name != b"empty")
    catalog[changed] = (99, 0, 0, 0)
    catalog.pop(b"empty")
    for read in readers.values():
        unseen = rows({b"x/" + k: v for k, v in catalog.items()} | {b"x/elsewhere": (1, 1, 1, 1)})
        got = read()
        assert not isinstance(got, OSError)
        pending = got[0]
        assert len(pending) == len(files)
        listed, unchanged = pending.take(b"x/", unseen)
        assert sorted(f[0] for f in listed) == sorted([changed, b"empty"])
        assert unchanged == len(files) - 2
        assert unseen == {b"x/elsewhere": (b"x/elsewhere", 1, 1, 1, 1)}
        with pytest.raises(TypeError):
            pending.take(b"", [])  # type: ignore[arg-type]


def test_walks_with_either_reader_agree(tmp_path: Path) -> None:
    odd_tree(tmp_path)
    raw = os.fsencode(str(tmp_path))

    def flat(reader: reconcile.ReadDirs) -> list[bytes]:
        out: list[bytes] = []
        for lst in walk_listings(raw, b"", IGNORE, reader):
            out += [lst.prefix + f[0] for f in lst.take()[0]] + [x.relpath for x in lst.links + lst.errors]
        return sorted(out)

    got = flat(reconcile.read_dirs)
    assert got == flat(reconcile._read_dirs_python)
    assert got == sorted(
        [b"caf\xe9", b"new\nline", b"d\xe9j\xe0/sub/x.mkv", b"empty", b"link", b"d\xe9j\xe0/broken"]
    )


def test_comparer_gives_the_same_diff_with_either_reader(tmp_path: Path) -> None:
    odd_tree(tmp_path)
    raw = os.fsencode(str(tmp_path))

    def diff(catalog: ListedRows, reader: reconcile.ReadDirs) -> tuple[list[bytes], list[bytes], int]:
        c = StreamComparer(catalog, IGNORE, keep_changed=True)
        for lst in walk_listings(raw, b"", IGNORE, reader):
            c.feed(lst)
        c.finish()
        return sorted(f.relpath for f in c.diff.changed), c.diff.vanished, c.diff.seen

    first = StreamComparer(known({}), IGNORE, keep_changed=True)
    for lst in walk_listings(raw, b"", IGNORE):
        first.feed(lst)
    first.finish()
    signatures = {f.relpath: f.signature for f in first.diff.changed}
    signatures[b"caf\xe9"] = (0, 0, 0, 0)  # changed since
    signatures[b"gone"] = (1, 1, 1, 1)  # deleted since
    del signatures[b"new\nline"]  # in error: retried even though it did not change
    diffs = [
        diff(known(signatures, (b"new\nline",)), r)
        for r in (reconcile.read_dirs, reconcile._read_dirs_python)
    ]
    assert diffs[0] == ([b"caf\xe9", b"new\nline"], [b"gone"], 4)
    assert diffs[1] == diffs[0]


def test_name_rules_on_raw_bytes_agree_with_decoded_names() -> None:
    rules = IgnoreRules((*DEFAULT_IGNORES, "*.bak"))
    fallback = IgnoreRules(("?x", "caf\xe9*"))
    assert rules.name_ignored_bytes is not None and fallback.name_ignored_bytes is not None
    for name in (b"a.part", b"a.part2", b".DS_Store", b"._x", b"caf\xe9.bak", b"x~", b"\xff.tmp", b"ok"):
        assert bool(rules.name_ignored_bytes(name)) == rules.name_ignored(os.fsdecode(name)), name
    for name in ("\xe9x", "ax", "xx1", "caf\xe9 1", "cafe"):
        raw = name.encode()
        assert bool(fallback.name_ignored_bytes(raw)) == fallback.name_ignored(name), name
