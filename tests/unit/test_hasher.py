import os
import threading
from pathlib import Path

import blake3
import pytest

from importd.pipeline import hasher
from importd.pipeline.hasher import BatchHasher, hash_file
from importd.pipeline.items import (
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    SettledFile,
    Unsettled,
    Vanished,
)

REF = FileRef(1, "r", b"f")
REAL_BLAKE3 = blake3.blake3


def settled(path: Path) -> SettledFile:
    return SettledFile(REF, FileStat.of(os.lstat(path)))


def test_small_and_big_files_match_blake3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hasher, "PIPELINE_FROM", 1 << 20)  # exercise the pipelined path cheaply
    for size in (0, 1, 4096, (1 << 20) - 1, 5 * (1 << 20) + 3):
        data = os.urandom(size)
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        out = hash_file(os.fsencode(str(p)), settled(p), bytearray(1 << 16))
        assert isinstance(out, HashedFile)
        assert out.blake3 == blake3.blake3(data).hexdigest()


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


def test_replaced_by_rename_while_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3 << 20))
    s = settled(p)
    other = tmp_path / "g"
    other.write_bytes(b"replacement")
    calls = []

    class Spy:
        def __init__(self, **kw: object) -> None:
            self.h = REAL_BLAKE3()

        def update(self, data: object) -> None:
            if not calls:
                os.rename(other, p)  # swapped under us after the first chunk
            calls.append(1)
            self.h.update(data)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(hasher.blake3, "blake3", Spy)
    out = hash_file(os.fsencode(str(p)), s, bytearray(1 << 20))
    assert isinstance(out, Unsettled)


def test_truncated_while_hashing_is_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f"
    p.write_bytes(os.urandom(4 << 20))
    s = settled(p)

    class Truncating:
        def __init__(self, **kw: object) -> None:
            self.h = REAL_BLAKE3()
            self.n = 0

        def update(self, data: object) -> None:
            self.n += 1
            if self.n == 1:
                os.truncate(p, 10)  # with mmap this would be SIGBUS
            self.h.update(data)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(hasher.blake3, "blake3", Truncating)
    assert isinstance(hash_file(os.fsencode(str(p)), s, bytearray(1 << 20)), Unsettled)


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
