"""Hash: BLAKE3 of a settled file's whole content, in worker threads.

Streamed reads into reused buffers, never mmap: `blake3.update_mmap` kills the process with
SIGBUS when another process truncates the file mid-hash. The blake3 package releases the GIL for
inputs of 2 KiB or more, so threads hash in parallel. Big files are read and hashed by several
threads at once, each its own part of BLAKE3's tree (the C extension `_blake3tree`; without it,
a reader thread feeds the blake3 package's own threads).

Every read lands in a page-aligned buffer, in whole pages. The copy out of the page cache costs
about five times more on AMD Zen when the destination sits 8 or 16 bytes past a page boundary
(where malloc puts a bytearray's data), 0.85 s instead of 0.16 s of kernel time per 2 GiB on the
bench machine: the single biggest cost of a streamed read. Callers pass a plain bytearray, made
one page larger than the chunk by `new_buffer`; `page_aligned` finds the aligned part of it.

The file is opened with O_NOFOLLOW|O_NONBLOCK (a path swapped for a symlink or a FIFO after the
walk must neither be followed nor block us), checked to be the same inode we settled, and
fstat-ed again after the last read: anything that changed meanwhile goes back to settling.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import queue
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import blake3

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
from importd.pipeline.reconcile import WalkedFile, describe_os_error

_T = TypeVar("_T")
PAGE = mmap.PAGESIZE
CHUNK = 1 << 20
# From this size several threads pay for themselves.
PIPELINE_FROM = 16 << 20
# Chunks small enough to stay in the CPU caches between the copy out of the page cache and the
# hash, and a power of two so that blake3 hashes each one as whole subtrees, in parallel.
PIPELINE_CHUNK = 2 << 20
PIPELINE_BUFFERS = 3
_O_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOATIME = getattr(os, "O_NOATIME", 0)
CPUS = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def new_buffer(size: int = CHUNK) -> bytearray:
    """A read buffer for `hash_file`: `size` bytes of it are page-aligned."""
    return bytearray(size + PAGE)


def page_aligned(buffer: bytearray) -> memoryview:
    """The page-aligned part of `buffer`, a whole number of pages long (all of it when it is
    shorter than two pages: for tiny buffers the copy cost does not matter). Its length does not
    depend on where the buffer happens to start: a page is always left for the alignment, so
    `new_buffer(size)` gives exactly `size` bytes even when malloc returned an aligned block."""
    view = memoryview(buffer)
    if len(buffer) < 2 * PAGE:
        return view
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    start = -address % PAGE
    return view[start : start + (len(buffer) - PAGE) // PAGE * PAGE]


def _read(fd: int, view: memoryview) -> int:
    """One read into `view`; the tests replace it to change the file mid-hash."""
    return os.readv(fd, [view])


def _open(path: bytes) -> int:
    if _NOATIME:
        try:
            return os.open(path, _O_FLAGS | _NOATIME)
        except PermissionError:
            pass  # O_NOATIME needs ownership (or CAP_FOWNER); fall back without it
    return os.open(path, _O_FLAGS)


def hash_file(
    path: bytes, settled: SettledFile, buffer: bytearray | memoryview, stop: threading.Event | None = None
) -> HashOutcome:
    """BLAKE3 of one file, or why not. `buffer` is read into for files below PIPELINE_FROM: a
    bytearray from `new_buffer` (any works; it is aligned here, at a small cost per call), or a
    memoryview the caller aligned once with `page_aligned`. Bigger files are read and hashed on
    every core (`_hash_big`)."""
    return _hash_file(path, settled, buffer, stop, parallel=True)


def hash_file_serial(
    path: bytes, settled: SettledFile, buffer: bytearray | memoryview, stop: threading.Event | None = None
) -> HashOutcome:
    """`hash_file` all in the calling thread, whatever the size: for callers that hash several
    files at once (the scrub), where that is the least work per byte. Big files take the C
    engine on this one thread when it is built."""
    return _hash_file(path, settled, buffer, stop, parallel=False)


def _hash_file(
    path: bytes,
    settled: SettledFile,
    buffer: bytearray | memoryview,
    stop: threading.Event | None,
    *,
    parallel: bool,
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
            with contextlib.suppress(OSError):  # advice only: a cold read gets a longer read-ahead
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if expected.size >= PIPELINE_FROM and (parallel or _hash_fd is not None):
            digest, total = _hash_big(fd, expected.size, stop, CPUS if parallel else 1)
        else:
            view = buffer if isinstance(buffer, memoryview) else page_aligned(buffer)
            digest, total = _hash_simple(fd, view, stop)
        if stop is not None and stop.is_set():
            return Unsettled(settled.ref)
        after = os.fstat(fd)
    except OSError as exc:
        return FileFailure(settled.ref, expected, f"read failed: {describe_os_error(exc)}")
    finally:
        os.close(fd)
    if FileStat.of(after) != expected or total != expected.size or digest is None:
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


def _hash_simple(fd: int, view: memoryview, stop: threading.Event | None) -> tuple[str, int]:
    hasher = blake3.blake3()
    total = 0
    while n := _read(fd, view):
        total += n
        hasher.update(view[:n])
        if stop is not None and n == len(view) and stop.is_set():
            break  # only between full reads, so small files never pay for the check
    return hasher.hexdigest(), total


# hash_fd(fd, size, threads, stop) -> (hexdigest | None, bytes hashed); see _blake3tree.c.
_hash_fd: Callable[[int, int, int, threading.Event | None], tuple[str | None, int]] | None
try:
    from importd.pipeline._blake3tree import hash_fd as _hash_fd
except ImportError:  # pragma: no cover - built by `pip install`, optional
    _hash_fd = None


def _hash_big(fd: int, size: int, stop: threading.Event | None, threads: int) -> tuple[str | None, int]:
    """A big file's first `size` bytes on `threads` threads: each reads (pread, into a buffer
    that stays in its cache) and hashes its own subtrees of BLAKE3's tree, in C. Where the
    extension is not built, a reader thread feeds the blake3 package's threads instead (only
    asked for with more than one thread). A file that grew shows in the fstat after; one that
    shrank in the count of bytes hashed. On one thread (`hash_file_serial`) the C path is still
    3-7 % faster than `_hash_simple`: 256 KiB reads that stay in the cache, no Python per read."""
    if _hash_fd is not None:
        return _hash_fd(fd, size, threads, stop)
    return _hash_pipelined(fd, stop)


class _BigFileKit(threading.local):
    """Per worker thread, kept between files: the read buffers (fresh ones would cost a page
    fault per 4 KiB on every file) and a hasher with its own blake3 thread pool, reused through
    `reset()`. A private pool rather than blake3's global one (AUTO) because threads inherit the
    priority of the thread that starts them: the global pool would hash a lowered scrub at full
    priority, or every later import at the scrub's, and a nice-19 reader feeding nice-0 hashing
    threads starves. The pool is made again when this thread's nice value changes."""

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.hasher: blake3.blake3 | None = None
        self.nice: int | None = None

    def take_hasher(self) -> blake3.blake3:
        nice = _thread_nice()
        if self.hasher is None or nice != self.nice:
            self.hasher, self.nice = blake3.blake3(max_threads=CPUS), nice
        else:
            self.hasher.reset()
        return self.hasher

    def take_buffers(self) -> list[memoryview]:
        if len(self.buffers) != PIPELINE_BUFFERS or len(self.buffers[0]) != PIPELINE_CHUNK:
            self.buffers = [page_aligned(new_buffer(PIPELINE_CHUNK)) for _ in range(PIPELINE_BUFFERS)]
        return self.buffers


_KIT = _BigFileKit()


def _thread_nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # per thread on Linux
    except OSError:
        return 0


def _hash_pipelined(fd: int, cancel: threading.Event | None) -> tuple[str, int]:
    """Big files without the C extension: a reader thread copies the next chunk while blake3's
    threads hash this one, so the copy (the cost mmap avoids) overlaps the hashing instead of
    adding to it. On the 2-core bench machine 0.65-0.77x of b3sum's speed, against 0.95-1.05x
    for `_hash_fd`: three busy threads on two cores, handing over 1,024 buffers a GiB."""
    free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[memoryview, int] | BaseException] = queue.SimpleQueue()
    for buf in _KIT.take_buffers():
        free.put(buf)
    hasher = _KIT.take_hasher()
    stop = threading.Event()
    empty = memoryview(b"")

    def read() -> None:
        try:
            while True:
                buf = free.get()
                if stop.is_set() or (cancel is not None and cancel.is_set()):
                    full.put((empty, 0))
                    return
                n = _read(fd, buf)
                full.put((buf, n))
                if n == 0:
                    return
        except BaseException as exc:  # handed to the hashing side, which re-raises it
            full.put(exc)

    thread = threading.Thread(target=read, name="importd-read", daemon=True)
    thread.start()
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
            hasher.update(buf[:n])
            free.put(buf)
    finally:
        stop.set()
        free.put(empty)  # unblock a reader waiting for a buffer
        thread.join()
    return hasher.hexdigest(), total


# (root, [(relpath, size, mtime_ns, ctime_ns, inode, dev) | WalkedFile]) -> [blake3 hex | status]
_read_small: Callable[[bytes, Sequence[Any]], list[str | int | tuple[str, int]]] | None
try:  # the C extension (_smallhash.c); without it every file takes `hash_file`
    from importd.pipeline._smallhash import read_small as _read_small
except ImportError:  # pragma: no cover - built by `pip install`, optional
    _read_small = None

# Files up to this size are read whole by `_smallhash.read_small`, a batch at a time, with one
# release of the GIL for all their syscalls (open, fstat, read, fstat, lstat): a cold import of
# 4 KiB files spent more time handing the GIL back and forth per syscall than reading. The
# checks are `_hash_file`'s, made in C, and so is the hash (BLAKE3's C implementation, vendored in
# third_party/blake3): in Python each file cost a blake3 object, a release and re-acquisition of
# the GIL and a hex digest, about 3 us. `SMALL_BATCH_BYTES` bounds what one call reads before the
# outcomes go on.
SMALL_MAX = 256 << 10
SMALL_BATCH_BYTES = 8 << 20


def _small_outcome(ref: FileRef, stat: FileStat, result: str | int | tuple[str, int]) -> HashOutcome:
    """What `_read_small` said of one file, as `hash_file` would have said it."""
    if isinstance(result, str):
        return HashedFile(ref, stat, result)
    if result == 1:
        return Vanished(ref)
    if result == 2:
        return Unsettled(ref)
    stage, err = cast(tuple[str, int], result)
    why = describe_os_error(OSError(err, os.strerror(err)))
    return FileFailure(ref, stat, f"cannot open: {why}" if stage == "open" else f"read failed: {why}")


def _by_bytes(items: Sequence[_T], sizes: Sequence[int]) -> Iterator[Sequence[_T]]:
    """Consecutive runs of `items` of at most SMALL_BATCH_BYTES together (at least one item
    each): what one `_read_small` call reads before its outcomes go on."""
    start = total = 0
    for end, size in enumerate(sizes):
        if end > start and total + size > SMALL_BATCH_BYTES:
            yield items[start:end]
            start, total = end, 0
        total += size
    if start < len(items):
        yield items[start:]


def hash_small_files(root: bytes, batch: Sequence[SettledFile]) -> list[HashOutcome]:
    """`hash_file` for files of at most SMALL_MAX bytes under one root, read by the C reader
    (falls back to `hash_file` one by one without it)."""
    if _read_small is None:
        buffer = page_aligned(new_buffer(SMALL_MAX))
        return [hash_file(root + b"/" + s.ref.relpath, s, buffer) for s in batch]
    out: list[HashOutcome] = []
    for part in _by_bytes(batch, [s.stat.size for s in batch]):
        st = [
            (s.ref.relpath, s.stat.size, s.stat.mtime_ns, s.stat.ctime_ns, s.stat.inode, s.stat.dev)
            for s in part
        ]
        out += [_small_outcome(s.ref, s.stat, r) for s, r in zip(part, _read_small(root, st), strict=True)]
    return out


def hash_walked(
    root_id: int,
    root_name: str,
    root: bytes,
    walked: Sequence[WalkedFile],
    stop: threading.Event | None = None,
) -> list[HashOutcome]:
    """`BatchHasher.hash_batch` for files straight from a walk (settled already, see
    `Pipeline._hand_on_walked`): the C reader takes the walk's records as they are, and only
    what it read gets a FileRef and a FileStat."""
    small: list[WalkedFile] = []
    outcomes: list[HashOutcome] = []
    buffer: memoryview | None = None
    for item in walked:
        if _read_small is None or item.signature[0] > SMALL_MAX:
            if buffer is None:
                buffer = page_aligned(new_buffer(CHUNK))
            settled = SettledFile(FileRef(root_id, root_name, item.relpath), item.stat)
            outcomes.append(hash_file(root + b"/" + item.relpath, settled, buffer, stop))
        else:
            small.append(item)
    if _read_small is None:
        return outcomes
    for part in _by_bytes(small, [w.signature[0] for w in small]):
        if stop is not None and stop.is_set():
            break
        for w, result in zip(part, _read_small(root, part), strict=True):
            outcomes.append(_small_outcome(FileRef(root_id, root_name, w.relpath), w.stat, result))
    return outcomes


class BatchHasher:
    """Hashes batches of files in one worker thread: small files a run at a time through the C
    reader, the others one by one into one reused read buffer."""

    def __init__(self, chunk: int = CHUNK, stop: threading.Event | None = None) -> None:
        self.chunk = chunk
        self.stop = stop or threading.Event()

    def hash_batch(self, root_paths: dict[int, bytes], batch: Sequence[SettledFile]) -> list[HashOutcome]:
        buffer: memoryview | None = None
        out: list[HashOutcome] = []
        run: list[SettledFile] = []  # consecutive small files of one root
        for settled in batch:
            if self.stop.is_set():
                run = []
                break  # shutting down: what is left is found again by the next reconcile
            root = root_paths.get(settled.ref.root_id)
            if root is None:
                continue  # root removed by a reload while queued
            if run and settled.ref.root_id != run[0].ref.root_id:
                out += hash_small_files(root_paths[run[0].ref.root_id], run)
                run = []
            if settled.stat.size <= SMALL_MAX and _read_small is not None:
                run.append(settled)
                continue
            if run:
                out += hash_small_files(root_paths[run[0].ref.root_id], run)
                run = []
            if buffer is None:
                buffer = page_aligned(new_buffer(self.chunk))
            out.append(hash_file(root + b"/" + settled.ref.relpath, settled, buffer, self.stop))
        if run:
            out += hash_small_files(root_paths[run[0].ref.root_id], run)
        return out
