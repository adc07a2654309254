"""The C engine for big files (`importd.pipeline._blake3tree.hash_fd`): the same digest as the blake3
package wherever BLAKE3's tree changes shape, whatever the thread count, and every way a read can end
badly reported, never hashed."""

import errno
import os
import random
import threading
from pathlib import Path

import blake3
import pytest

from importd.pipeline import hasher

pytestmark = pytest.mark.skipif(hasher._hash_fd is None, reason="the C extension is not built")

KiB, MiB = 1 << 10, 1 << 20
PIECE = 256 * KiB  # _blake3tree.c: what one thread reads and hashes at a time


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    data = random.Random(5).randbytes(12 * MiB + 3 * KiB + 7)
    path = tmp_path_factory.mktemp("tree") / "data"
    path.write_bytes(data)
    return data, path


def hash_fd(path: Path, size: int, threads: int, stop: object = None) -> tuple[str | None, int]:
    assert hasher._hash_fd is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        return hasher._hash_fd(fd, size, threads, stop)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_digests_match_the_blake3_package(data_file: tuple[bytes, Path]) -> None:
    data, path = data_file
    # One chunk and around it; one piece and around it; tasks of every size from a piece to 4 MiB
    # (the task size follows the file size), with and without a tail; and some sizes at random.
    sizes = [0, 1, 1023, 1024, 1025, 2 * KiB, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 2 * PIECE + 1]
    sizes += [MiB - 1, MiB, MiB + KiB, 2 * MiB, 3 * MiB + 777, 4 * MiB, 8 * MiB, 8 * MiB + 1, 12 * MiB]
    sizes += [len(data), *random.Random(6).sample(range(len(data)), 8)]
    for size in sizes:
        expected = blake3.blake3(data[:size]).hexdigest()
        for threads in (1, 2, 3):
            assert hash_fd(path, size, threads) == (expected, size), (size, threads)


def test_a_file_shorter_than_asked_reports_where_it_ended(data_file: tuple[bytes, Path]) -> None:
    data, path = data_file
    for asked in (len(data) + 1, len(data) + 5 * MiB):
        assert hash_fd(path, asked, 2) == (None, len(data))


def test_a_read_error_raises_oserror(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: pread fails with EISDIR
    try:
        assert hasher._hash_fd is not None
        with pytest.raises(OSError) as caught:
            hasher._hash_fd(fd, 8 * MiB, 2, None)
        assert caught.value.errno == errno.EISDIR
    finally:
        os.close(fd)


def test_stop_abandons_the_hash(data_file: tuple[bytes, Path]) -> None:
    _, path = data_file
    stop = threading.Event()
    stop.set()
    assert hash_fd(path, 12 * MiB, 2, stop) == (None, 0)


def test_an_error_from_stop_is_raised(data_file: tuple[bytes, Path]) -> None:
    _, path = data_file

    class Broken:
        def is_set(self) -> bool:
            raise RuntimeError("stop is broken")

    with pytest.raises(RuntimeError, match="stop is broken"):
        hash_fd(path, 12 * MiB, 2, Broken())


def test_stop_through_hash_file_goes_back_to_settling(tmp_path: Path) -> None:
    from importd.items import FileRef, FileStat, SettledFile, Unsettled

    p = tmp_path / "f"
    p.write_bytes(os.urandom(hasher.PIPELINE_FROM + 5))
    stop = threading.Event()
    stop.set()
    s = SettledFile(FileRef(1, "r", b"f"), FileStat.of(os.lstat(p)))
    assert isinstance(hasher.hash_file(os.fsencode(str(p)), s, hasher.new_buffer(), stop), Unsettled)


@pytest.mark.skipif(hasher.CPUS < 2 or not os.path.isdir("/proc/self/task"), reason="needs 2 CPUs, Linux")
def test_helper_threads_take_the_priority_of_the_thread_that_asks(tmp_path: Path) -> None:
    """A lowered scrub must not hash at full priority: the threads hash_fd starts inherit the nice
    value of the thread calling it. Seen from inside: `stop.is_set()` is asked before the caller's
    first task (right after the helpers start) and then every few tasks; a file of 24 tasks keeps
    the helpers busy across those calls."""
    data = random.Random(9).randbytes(96 * MiB)
    path = tmp_path / "big"
    path.write_bytes(data)
    seen: dict[str, object] = {}
    nice: dict[str, int] = {}

    class Looking:
        def is_set(self) -> bool:
            for tid in os.listdir("/proc/self/task"):
                n = nice_of(tid)
                if n is not None:
                    nice.setdefault(tid, n)
            return False

    def worker() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 9)
        before = set(os.listdir("/proc/self/task"))
        seen["digest"] = hash_fd(path, len(data), 2, Looking())
        seen["before"] = before

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["digest"] == (blake3.blake3(data).hexdigest(), len(data))
    assert isinstance(seen["before"], set)
    helpers = {tid: n for tid, n in nice.items() if tid not in seen["before"]}
    assert helpers and set(helpers.values()) == {9}


def nice_of(tid: str) -> int | None:
    try:
        with open(f"/proc/self/task/{tid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[16])
    except FileNotFoundError:
        return None  # a thread that just ended


def test_serial_hashing_of_a_big_file_takes_the_c_engine_on_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importd.items import FileRef, FileStat, HashedFile, SettledFile

    data = os.urandom(hasher.PIPELINE_FROM + 5)
    p = tmp_path / "f"
    p.write_bytes(data)
    calls: list[int] = []
    real = hasher._hash_fd
    assert real is not None

    def spy(fd: int, size: int, threads: int, stop: object) -> tuple[str | None, int]:
        calls.append(threads)
        return real(fd, size, threads, stop)  # type: ignore[arg-type]

    monkeypatch.setattr(hasher, "_hash_fd", spy)
    s = SettledFile(FileRef(1, "r", b"f"), FileStat.of(os.lstat(p)))
    out = hasher.hash_file_serial(os.fsencode(str(p)), s, hasher.new_buffer())
    assert isinstance(out, HashedFile) and out.blake3 == blake3.blake3(data).hexdigest()
    assert calls == [1]


def test_bad_arguments_are_errors_not_crashes(data_file: tuple[bytes, Path]) -> None:
    data, path = data_file
    f = hasher._hash_fd
    assert f is not None
    with pytest.raises(ValueError, match="negative file descriptor"):
        f(-1, 10, 2, None)
    with pytest.raises(ValueError, match="negative size"):
        f(0, -1, 2, None)
    with pytest.raises(OverflowError):
        f(0, 1 << 64, 2, None)
    with pytest.raises(TypeError):
        f("3", 10, 2, None)  # type: ignore[arg-type]
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as closed:
        f(fd, 8 * MiB, 2, None)  # no longer open
    assert closed.value.errno == errno.EBADF
    # Thread counts out of range are clamped (at least the caller's, at most 64).
    for threads in (0, -5, 1000):
        assert hash_fd(path, 4 * MiB, threads) == (blake3.blake3(data[: 4 * MiB]).hexdigest(), 4 * MiB)


def test_a_stop_without_is_set_is_an_error(data_file: tuple[bytes, Path]) -> None:
    _, path = data_file
    with pytest.raises(AttributeError):
        hash_fd(path, 12 * MiB, 2, object())
