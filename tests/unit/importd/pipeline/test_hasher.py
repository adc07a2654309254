import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from importd.items import (
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    SettledFile,
    Unsettled,
    Vanished,
)
from importd.pipeline import hasher
from importd.pipeline.hasher import PAGE, BatchHasher, hash_file, new_buffer, page_aligned
from importd.pipeline.reconcile import WalkedFile

REF = FileRef(1, "r", b"f")
REAL_READ = hasher._read


def settled(path: Path) -> SettledFile:
    return SettledFile(REF, FileStat.of(os.lstat(path)))


@pytest.fixture
def small_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The big-file path for files of 1 MiB and more, in 256 KiB chunks: cheap to exercise."""
    monkeypatch.setattr(hasher, "PIPELINE_FROM", 1 << 20)
    monkeypatch.setattr(hasher, "PIPELINE_CHUNK", 256 << 10)


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big files through the fallback (a reader thread feeding the blake3 package's threads), as
    where the C extension is not built: its reads go through `hasher._read`."""
    monkeypatch.setattr(hasher, "_hash_fd", None)


needs_tree = pytest.mark.skipif(hasher._hash_fd is None, reason="the C extension is not built")
ENGINES = [pytest.param("tree", marks=needs_tree), "streamed"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both big-file engines: `_blake3tree.hash_fd` (threads reading their own parts, in C) and
    the streamed fallback."""
    if request.param == "streamed":
        monkeypatch.setattr(hasher, "_hash_fd", None)
    return str(request.param)


class MidHash:
    """Runs an action once, part-way through hashing a file, with either engine: after the first
    read of the streamed paths (`hasher._read`), or, for the C engine, when it first asks the
    `stop` object (after its first task: the other threads are reading and hashing meanwhile)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
        self.action = action
        self.reads = after_first_read(monkeypatch, self._once)
        self.asked = 0
        self.done = False

    def _once(self) -> None:
        if not self.done:
            self.done = True
            self.action()

    def is_set(self) -> bool:
        self.asked += 1
        self._once()
        return False


def after_first_read(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[int]:
    """Run `action` once, right after the first read of the file being hashed."""
    reads: list[int] = []

    def read(fd: int, view: memoryview) -> int:
        n = REAL_READ(fd, view)
        if not reads:
            action()
        reads.append(n)
        return n

    monkeypatch.setattr(hasher, "_read", read)
    return reads


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.mark.usefixtures("small_pipeline")
def test_small_and_big_files_match_blake3(tmp_path: Path) -> None:
    for size in (0, 1, 4096, (1 << 20) - 1, 1 << 20, 5 * (1 << 20) + 3):
        data = os.urandom(size)
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        for buffer in (new_buffer(1 << 16), bytearray(1 << 16), bytearray(100)):
            out = hash_file(os.fsencode(str(p)), settled(p), buffer)
            assert isinstance(out, HashedFile)
            assert out.blake3 == blake3.blake3(data).hexdigest()


def test_reads_land_on_page_boundaries_in_whole_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for buffer in (new_buffer(), bytearray(1 << 20), bytearray(3 * PAGE + 5)):
        view = page_aligned(buffer)
        assert address(view) % PAGE == 0
        assert len(view) % PAGE == 0
        assert len(view) >= len(buffer) - 2 * PAGE + 1
    assert len(page_aligned(new_buffer(1 << 20))) == 1 << 20
    assert len(page_aligned(bytearray(PAGE + 1))) == PAGE + 1  # too small to bother

    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 << 20))
    seen: list[tuple[int, int]] = []

    def read(fd: int, view: memoryview) -> int:
        seen.append((address(view) % PAGE, len(view) % PAGE))
        return REAL_READ(fd, view)

    monkeypatch.setattr(hasher, "_read", read)
    assert isinstance(hash_file(os.fsencode(str(p)), settled(p), new_buffer()), HashedFile)
    monkeypatch.setattr(hasher, "PIPELINE_FROM", 1 << 20)
    monkeypatch.setattr(hasher, "_hash_fd", None)  # the streamed big-file path (the C one aligns in C)
    assert isinstance(hash_file(os.fsencode(str(p)), settled(p), new_buffer()), HashedFile)
    assert len(seen) > 6 and set(seen) == {(0, 0)}


def test_changed_since_settle_goes_back(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"one")
    s = settled(p)
    p.write_bytes(b"two!")
    assert isinstance(hash_file(os.fsencode(str(p)), s, bytearray(1024)), Unsettled)


def test_vanished_replaced_by_symlink_or_fifo(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    s = settled(p)
    p.unlink()
    assert isinstance(hash_file(os.fsencode(str(p)), s, bytearray(1024)), Vanished)
    os.symlink("/etc/passwd", p)
    assert isinstance(hash_file(os.fsencode(str(p)), s, bytearray(1024)), Vanished)
    p.unlink()
    os.mkfifo(p)  # must neither block nor be hashed
    assert isinstance(hash_file(os.fsencode(str(p)), s, bytearray(1024)), Vanished)


@pytest.mark.parametrize("size", [3 << 20, 20 << 20])
def test_replaced_by_rename_while_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, engine: str
) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(size))
    s = settled(p)
    other = tmp_path / "g"
    other.write_bytes(b"replacement")
    mid = MidHash(monkeypatch, lambda: os.rename(other, p))
    out = hash_file(os.fsencode(str(p)), s, new_buffer(), mid)  # type: ignore[arg-type]
    assert mid.done
    assert isinstance(out, Unsettled)
    if mid.reads:
        assert len(mid.reads) > 1  # the rest of the old inode was read through the open descriptor


@pytest.mark.parametrize("size", [4 << 20, 20 << 20])
def test_truncated_while_hashing_is_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, engine: str
) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(size))
    s = settled(p)
    mid = MidHash(monkeypatch, lambda: os.truncate(p, 10))  # with mmap this would be SIGBUS
    assert isinstance(hash_file(os.fsencode(str(p)), s, new_buffer(), mid), Unsettled)  # type: ignore[arg-type]
    assert mid.done


@pytest.mark.parametrize("size", [4 << 20, 20 << 20])
def test_grown_while_hashing_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, engine: str
) -> None:
    """Still being written: the C engine reads only the settled size, so the fstat after the last
    read is what tells; the streamed engines read to the end and also see a count that differs."""
    p = tmp_path / "f"
    p.write_bytes(os.urandom(size))
    s = settled(p)

    def append() -> None:
        with open(p, "ab") as fh:
            fh.write(b"more")

    mid = MidHash(monkeypatch, append)
    assert isinstance(hash_file(os.fsencode(str(p)), s, new_buffer(), mid), Unsettled)  # type: ignore[arg-type]
    assert mid.done


@pytest.mark.usefixtures("small_pipeline", "streamed")
def test_read_error_in_the_reader_thread_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 << 20))

    def fail() -> None:
        raise OSError(errno.EIO, "Input/output error")

    after_first_read(monkeypatch, fail)
    out = hash_file(os.fsencode(str(p)), settled(p), new_buffer())
    assert isinstance(out, FileFailure) and "input/output error" in out.reason
    assert not any(t.name == "importd-read" for t in threading.enumerate())


@pytest.mark.usefixtures("small_pipeline", "streamed")
def test_stop_mid_file_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(4 << 20))
    stop = threading.Event()
    reads = after_first_read(monkeypatch, stop.set)
    assert isinstance(hash_file(os.fsencode(str(p)), settled(p), new_buffer(), stop), Unsettled)
    assert len(reads) < 16  # did not read the whole file
    assert not any(t.name == "importd-read" for t in threading.enumerate())


def _nice_of_tasks() -> dict[int, int]:
    out: dict[int, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a thread that just ended
        out[int(tid)] = int(fields[16])  # field 19 of stat, counting from the pid
    return out


@pytest.mark.usefixtures("small_pipeline", "streamed")
@pytest.mark.skipif(hasher.CPUS < 2 or not os.path.isdir("/proc/self/task"), reason="needs 2 CPUs, Linux")
def test_hashing_threads_take_the_priority_of_the_thread_that_asks(tmp_path: Path) -> None:
    """A lowered scrub must not feed full-priority hashing threads (nor the other way round):
    its reader and blake3's threads take the nice value of the worker thread that hashes."""
    p = tmp_path / "f"
    data = os.urandom(3 << 20)
    p.write_bytes(data)
    seen: dict[str, object] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        first = hash_file(os.fsencode(str(p)), settled(p), new_buffer())
        pool_before = hasher._KIT.hasher
        again = hash_file(os.fsencode(str(p)), settled(p), new_buffer())
        seen["reused"] = hasher._KIT.hasher is pool_before
        os.setpriority(os.PRIO_PROCESS, tid, 7)
        lowered = hash_file(os.fsencode(str(p)), settled(p), new_buffer())
        seen["new_pool"] = hasher._KIT.hasher is not pool_before
        seen["lowered_tasks"] = {t for t, nice in _nice_of_tasks().items() if nice == 7} - {tid}
        seen["digests"] = {o.blake3 for o in (first, again, lowered) if isinstance(o, HashedFile)}

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["digests"] == {blake3.blake3(data).hexdigest()}
    assert seen["reused"] and seen["new_pool"]
    lowered = seen["lowered_tasks"]
    assert isinstance(lowered, set) and len(lowered) >= hasher.CPUS  # the new pool's threads


def test_permission_denied_is_a_failure(tmp_path: Path) -> None:
    if os.getuid() == 0:
        pytest.skip("root reads everything; covered by the integration test with setpriv")
    p = tmp_path / "f"
    p.write_bytes(b"x")
    p.chmod(0)
    out = hash_file(os.fsencode(str(p)), settled(p), bytearray(1024))
    assert isinstance(out, FileFailure) and "permission denied" in out.reason


def test_batch_stops_when_asked(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"%d" % i)
        files.append(SettledFile(FileRef(1, "r", p.name.encode()), FileStat.of(os.lstat(p))))
    stop = threading.Event()
    h = BatchHasher(stop=stop)
    assert len(h.hash_batch({1: os.fsencode(str(tmp_path))}, files)) == 3
    stop.set()
    assert h.hash_batch({1: os.fsencode(str(tmp_path))}, files) == []


def test_small_files_without_the_c_reader_take_hash_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `_smallhash` is not built, small files are hashed one by one by `hash_file`: through
    `hash_small_files`, `hash_walked` and `BatchHasher`, with the same outcomes, in order."""
    monkeypatch.setattr(hasher, "_read_small", None)
    raw = os.fsencode(tmp_path)
    names = [b"a", b"sub/b", b"caf\xe9", b"big", b"gone"]
    for i, name in enumerate(names):
        path = tmp_path / os.fsdecode(name)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(hasher.SMALL_MAX + 1 if name == b"big" else 100 * i))
    walked = [WalkedFile.of(n, os.lstat(raw + b"/" + n)) for n in names]
    files = [SettledFile(FileRef(1, "r", w.relpath), w.stat) for w in walked]
    (tmp_path / "gone").unlink()
    expected = [hash_file(raw + b"/" + s.ref.relpath, s, new_buffer()) for s in files]
    assert [type(o) for o in expected] == [HashedFile] * 4 + [Vanished]
    assert hasher.hash_small_files(raw, files) == expected
    assert hasher.hash_walked(1, "r", raw, walked) == expected
    assert BatchHasher().hash_batch({1: raw}, files) == expected
