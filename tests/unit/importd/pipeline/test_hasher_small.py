"""The C reader for small files (`_smallhash.read_small`) against `hash_file`: same outcome in
every case the hasher knows (changed, grown, vanished, swapped for a link, a fifo or another
file, unreadable), on real files."""

import os
from pathlib import Path

import blake3
import pytest

from importd.items import (
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    HashOutcome,
    SettledFile,
    Unsettled,
    Vanished,
)
from importd.pipeline import hasher
from importd.pipeline.hasher import SMALL_MAX, BatchHasher, hash_file, hash_small_files, new_buffer

pytestmark = pytest.mark.skipif(hasher._read_small is None, reason="the C extension is not built")


def settle(root: Path, name: bytes) -> SettledFile:
    return SettledFile(FileRef(1, "r", name), FileStat.of(os.lstat(os.fsencode(root) + b"/" + name)))


def both(root: Path, files: list[SettledFile]) -> tuple[list[HashOutcome], list[HashOutcome]]:
    raw = os.fsencode(root)
    by_c = hash_small_files(raw, files)
    by_python = [hash_file(raw + b"/" + s.ref.relpath, s, new_buffer()) for s in files]
    return by_c, by_python


def test_the_reader_is_the_small_file_hasher_extension() -> None:
    assert hasher._read_small is not None
    assert hasher._read_small.__module__ == "importd.pipeline._smallhash"


def test_contents_hash_like_hash_file_and_b3(tmp_path: Path) -> None:
    names = []
    for i, size in enumerate((0, 1, 2047, 2048, 4096, 65537, SMALL_MAX)):
        name = b"f%d" % i
        (tmp_path / name.decode()).write_bytes(os.urandom(size))
        names.append(name)
    odd = b"caf\xe9\nname"  # not UTF-8, and a newline
    (tmp_path / os.fsdecode(odd)).write_bytes(b"odd")
    names.append(odd)
    files = [settle(tmp_path, n) for n in names]
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    for outcome, name in zip(by_c, names, strict=True):
        assert isinstance(outcome, HashedFile)
        assert outcome.blake3 == blake3.blake3((tmp_path / os.fsdecode(name)).read_bytes()).hexdigest()


def test_changed_grown_and_shrunk_files_settle_again(tmp_path: Path) -> None:
    for name in ("grown", "shrunk", "touched"):
        (tmp_path / name).write_bytes(b"x" * 100)
    files = [settle(tmp_path, n) for n in (b"grown", b"shrunk", b"touched")]
    with open(tmp_path / "grown", "ab") as f:
        f.write(b"more")
    os.truncate(tmp_path / "shrunk", 10)
    os.utime(tmp_path / "touched", ns=(1, 1))
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python == [Unsettled(s.ref) for s in files]


def test_growth_is_seen_even_when_the_stat_is_stale(tmp_path: Path) -> None:
    """A settled size smaller than the file (the stat we were given lags): never a hash of a
    prefix."""
    p = tmp_path / "f"
    p.write_bytes(b"y" * 50)
    st = FileStat.of(os.lstat(p))
    lagging = SettledFile(FileRef(1, "r", b"f"), FileStat(40, st.mtime_ns, st.ctime_ns, st.inode, st.dev))
    assert hash_small_files(os.fsencode(tmp_path), [lagging]) == [Unsettled(lagging.ref)]


def test_vanished_links_fifos_and_replacements(tmp_path: Path) -> None:
    for name in ("gone", "link", "fifo", "replaced"):
        (tmp_path / name).write_bytes(b"z")
    files = [settle(tmp_path, n) for n in (b"gone", b"link", b"fifo", b"replaced")]
    (tmp_path / "gone").unlink()
    (tmp_path / "link").unlink()
    (tmp_path / "link").symlink_to(tmp_path / "replaced")
    (tmp_path / "fifo").unlink()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "new").write_bytes(b"z")
    os.rename(tmp_path / "new", tmp_path / "replaced")
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    assert by_c[:3] == [Vanished(s.ref) for s in files[:3]]
    assert by_c[3] == Unsettled(files[3].ref)  # another inode at that path now


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_failure_with_its_reason(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    p.write_bytes(b"s")
    files = [settle(tmp_path, b"secret")]
    p.chmod(0)
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    assert isinstance(by_c[0], FileFailure) and by_c[0].reason == "cannot open: permission denied"


def test_a_directory_in_the_way_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    st = FileStat.of(os.lstat(tmp_path / "f"))
    files = [SettledFile(FileRef(1, "r", b"f/below"), st)]  # a path through a regular file
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    assert isinstance(by_c[0], FileFailure) and "cannot open" in by_c[0].reason


def test_batch_hasher_mixes_small_and_big_files_in_order(tmp_path: Path) -> None:
    sizes = [10, SMALL_MAX + 1, 20, 30, 3 * SMALL_MAX, 0]
    files = []
    for i, size in enumerate(sizes):
        (tmp_path / f"f{i}").write_bytes(os.urandom(size))
        files.append(settle(tmp_path, b"f%d" % i))
    other = tmp_path / "other"
    other.mkdir()
    (other / "g").write_bytes(b"g")
    g = SettledFile(FileRef(2, "o", b"g"), FileStat.of(os.lstat(other / "g")))
    batch = [*files[:3], g, *files[3:]]
    out = BatchHasher().hash_batch({1: os.fsencode(tmp_path), 2: os.fsencode(other)}, batch)
    assert [o.ref for o in out] == [s.ref for s in batch]
    for outcome, s in zip(out, batch, strict=True):
        root = other if s.ref.root_id == 2 else tmp_path
        assert isinstance(outcome, HashedFile)
        assert outcome.blake3 == blake3.blake3((root / os.fsdecode(s.ref.relpath)).read_bytes()).hexdigest()


def test_files_of_several_folders_in_any_order(tmp_path: Path) -> None:
    """Each run of one folder's files is read through that folder; runs may interleave."""
    names = [b"top", b"a/x", b"a/y", b"b/x", b"a/z", b"a/deeper/x", b"b/y", b"top2", b"caf\xe9/\nx"]
    for name in names:
        path = tmp_path / os.fsdecode(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100) + name)
    files = [settle(tmp_path, n) for n in names]
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    assert all(isinstance(o, HashedFile) for o in by_c)


def test_a_folder_that_is_a_link_or_gone_is_read_as_hash_file_reads_it(tmp_path: Path) -> None:
    """A folder that cannot be opened as one, without following a link, has its files opened by
    their whole path, as hash_file opens them: through the link, or not at all."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_bytes(b"f")
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "f").write_bytes(b"g")
    files = [settle(tmp_path, b"linked/f"), settle(tmp_path, b"gone/f")]
    (tmp_path / "gone" / "f").unlink()
    (tmp_path / "gone").rmdir()
    by_c, by_python = both(tmp_path, files)
    assert by_c == by_python
    assert isinstance(by_c[0], HashedFile)
    assert by_c[1] == Vanished(files[1].ref)
