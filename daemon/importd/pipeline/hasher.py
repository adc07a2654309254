"""Hash: BLAKE3 of a settled file's whole content, in worker threads.

Streamed reads into one reused buffer, never mmap: `blake3.update_mmap` kills the process with
SIGBUS when another process truncates the file mid-hash. The blake3 package releases the GIL for
inputs of 2 KiB or more, so threads hash in parallel. Big files also use blake3's own threads.

The file is opened with O_NOFOLLOW|O_NONBLOCK (a path swapped for a symlink or a FIFO after the
walk must neither be followed nor block us), checked to be the same inode we settled, and
fstat-ed again after the last read: anything that changed meanwhile goes back to settling.
"""

from __future__ import annotations

import errno
import io
import os
import queue
import stat as stat_mod
import threading
from collections.abc import Sequence

import blake3

from importd.pipeline.items import (
    FileFailure,
    FileStat,
    HashedFile,
    HashOutcome,
    SettledFile,
    Unsettled,
    Vanished,
)
from importd.pipeline.reconcile import describe_os_error

CHUNK = 1 << 20
# Above this size a reader thread and blake3's own threads pay for themselves.
PIPELINE_FROM = 16 << 20
PIPELINE_CHUNK = 1 << 20
PIPELINE_BUFFERS = 4
_O_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)


def _open(path: bytes) -> int:
    if _NOATIME:
        try:
            return os.open(path, _O_FLAGS | _NOATIME)
        except PermissionError:
            pass  # O_NOATIME needs ownership (or CAP_FOWNER); fall back without it
    return os.open(path, _O_FLAGS)


def hash_file(
    path: bytes, settled: SettledFile, buffer: bytearray, stop: threading.Event | None = None
) -> HashOutcome:
    expected = settled.stat
    try:
        fd = _open(path)
    except FileNotFoundError:
        return Vanished(settled.ref)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink since the walk
            return Vanished(settled.ref)
        return FileFailure(settled.ref, expected, f"cannot open: {describe_os_error(exc)}")
    try:
        before = os.fstat(fd)
        if not stat_mod.S_ISREG(before.st_mode):
            return Vanished(settled.ref)
        if FileStat.of(before) != expected:
            return Unsettled(settled.ref)
        if expected.size >= PIPELINE_FROM:
            digest, total = _hash_pipelined(fd, stop)
        else:
            digest, total = _hash_simple(fd, buffer)
        if stop is not None and stop.is_set():
            return Unsettled(settled.ref)
        after = os.fstat(fd)
    except OSError as exc:
        return FileFailure(settled.ref, expected, f"read failed: {describe_os_error(exc)}")
    finally:
        os.close(fd)
    if FileStat.of(after) != expected or total != expected.size:
        return Unsettled(settled.ref)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return Vanished(settled.ref)
    except OSError:
        return Unsettled(settled.ref)
    if (now.st_ino, now.st_dev) != (expected.inode, expected.dev):
        # Replaced by another file (rename over it) while we read: settle the new one.
        return Unsettled(settled.ref)
    return HashedFile(settled.ref, expected, digest)


def _hash_simple(fd: int, buffer: bytearray) -> tuple[str, int]:
    hasher = blake3.blake3()
    view = memoryview(buffer)
    total = 0
    with io.FileIO(fd, "rb", closefd=False) as reader:
        while True:
            n = reader.readinto(view)
            if not n:
                break
            total += n
            hasher.update(view[:n])
    return hasher.hexdigest(), total


def _hash_pipelined(fd: int, cancel: threading.Event | None) -> tuple[str, int]:
    """Big files: one thread reads the next chunk while blake3's threads hash this one. Chunks of
    1 MiB stay in the CPU cache between the copy out of the page cache and the hash, which is
    what lets a streamed read come close to b3sum's mmap (measured in `make bench`)."""
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(PIPELINE_BUFFERS):
        free.put(bytearray(PIPELINE_CHUNK))
    stop = threading.Event()

    def read() -> None:
        try:
            with io.FileIO(fd, "rb", closefd=False) as reader:
                while True:
                    if stop.is_set() or (cancel is not None and cancel.is_set()):
                        full.put((bytearray(0), 0))
                        return
                    buf = free.get()
                    n = reader.readinto(buf) or 0
                    full.put((buf, n))
                    if n == 0:
                        return
        except BaseException as exc:  # handed to the hashing side, which re-raises it
            full.put(exc)

    thread = threading.Thread(target=read, name="importd-read", daemon=True)
    thread.start()
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    total = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            if n == 0:
                break
            total += n
            hasher.update(memoryview(buf)[:n])
            free.put(buf)
    finally:
        stop.set()
        free.put(bytearray(0))  # unblock a reader waiting for a buffer
        thread.join()
    return hasher.hexdigest(), total


class BatchHasher:
    """Hashes batches of files in one worker thread, reusing one read buffer per thread."""

    def __init__(self, chunk: int = CHUNK, stop: threading.Event | None = None) -> None:
        self.chunk = chunk
        self.stop = stop or threading.Event()

    def hash_batch(self, root_paths: dict[int, bytes], batch: Sequence[SettledFile]) -> list[HashOutcome]:
        buffer = bytearray(self.chunk)
        out: list[HashOutcome] = []
        for settled in batch:
            if self.stop.is_set():
                break  # shutting down: what is left is found again by the next reconcile
            root = root_paths.get(settled.ref.root_id)
            if root is None:
                continue  # root removed by a reload while queued
            out.append(hash_file(root + b"/" + settled.ref.relpath, settled, buffer, self.stop))
        return out
