"""What importd asks of the interpreter and the C library beyond their defaults, one named function each.

A long-running daemon that makes millions of short-lived objects: the cyclic collector and glibc's
allocator, tuned as measured on a cold import of 100,000 files (`make bench`), where the start-up
settings saved about 1.5 s of CPU together (of ~11 s). Each function says why and what it costs; all
of them are safe where their trick does not exist (not glibc, not Linux): they then do nothing.

Thread names live in `importd.threads`, thread priorities in `importd.priority`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import faulthandler
import functools
import gc
import signal
from collections.abc import Iterator
from typing import Any

import anyio

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
# Freed heap kept before glibc gives it back. Its default (128 KiB) made a cold import hand memory
# back and fault it in again thousands of times a second (madvise, page faults: ~0.6 s of system
# time): each batch of small files read is a few MB of 4 KiB buffers. The memory is returned
# after every big walk instead (`release_memory`: malloc_trim).
TRIM_THRESHOLD = 16 << 20
TOP_PAD = 4 << 20
# The cyclic collector's first generation is collected every this many container allocations
# (Python's default: 700). A cold import allocates a few per file, nearly all freed by reference
# counting; collecting every 700 spent ~9 % of the CPU walking them.
GC_GEN0_THRESHOLD = 20_000
# prctl(2) option: the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library the process already has loaded (its global symbols), looked up once, with
    errno kept for `ctypes.get_errno()`; None where there is none to load."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def tune_runtime() -> None:
    """Call once, after start-up: the three settings below, in that order."""
    freeze_startup_objects()
    collect_young_less_often()
    keep_freed_heap()


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, config, compiled patterns: they live as long as the
    process) out of the cyclic collector's reach (`gc.freeze`), so full collections skip them.
    Cost: a cycle among them is never collected, which it would not be anyway."""
    gc.freeze()


def collect_young_less_often() -> None:
    """Collect the first generation every GC_GEN0_THRESHOLD container allocations, not 700.
    Cost: cyclic garbage (rare here: reference counting frees nearly everything) lingers until the
    next collection, a few MB at most."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def keep_freed_heap() -> None:
    """Let glibc keep up to TRIM_THRESHOLD of freed heap (and grow it by TOP_PAD at a time) rather
    than return it to the kernel at once. Cost: up to ~20 MB of freed memory stays counted in the
    daemon's RSS between walks; `release_memory` returns it after a big one. Not glibc (no
    mallopt): the allocator's own defaults stand."""
    with contextlib.suppress(AttributeError):
        c = libc()
        if c is not None:
            c.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            c.mallopt(_M_TOP_PAD, TOP_PAD)


def release_memory() -> None:
    """After a big walk: collect, then hand glibc's freed arenas back to the kernel (malloc_trim).
    A cold import of 100,000 files leaves ~100 MB of freed-but-kept heap (snapshots, queues)
    otherwise. Cost: a full collection and a pass over the heap, tens of milliseconds, once per
    walk of RELEASE_MEMORY_AFTER files or more (see pipeline/wiring.py). Not glibc: the memory is
    reused by the next walk anyway."""
    gc.collect()
    with contextlib.suppress(AttributeError):
        c = libc()
        if c is not None:
            c.malloc_trim(0)


_pauses = 0
_enable_after = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic cyclic collection for the duration (nested and overlapping uses count; the
    event loop's thread only). A whole-root walk makes a few objects per file, and reference
    counting frees them: over a cold import of 100,000 files the collector ran some 240 times and
    found 805 objects, and the GIL-bound import took 0.15 s longer with it than without (0.24 s
    more CPU; A/B, four pairs). Cost: cycles made meanwhile wait; the next collection after the
    pause finds what little was left."""
    global _pauses, _enable_after
    if _pauses == 0:
        _enable_after = gc.isenabled()
        gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0 and _enable_after:
            gc.enable()


# `kill -USR1 <pid>` dumps every thread's stack (to stderr: the journal under systemd).
DUMP_STACKS_SIGNAL = signal.SIGUSR1


def dump_stacks_on_signal() -> None:
    """Write every thread's Python stack to stderr when DUMP_STACKS_SIGNAL arrives, so a daemon
    that stops answering can say where it is stuck. faulthandler's handler is C code that runs
    in the signal handler itself: it works while the event loop is blocked or the GIL is held
    by a stuck thread, where a Python-level handler would never run. Cost: none until the
    signal; the signal no longer kills the process (its default action)."""
    faulthandler.register(DUMP_STACKS_SIGNAL, all_threads=True, chain=False)


def die_with_parent() -> None:
    """In a child process, before it runs its program (`subprocess.run(preexec_fn=...)`): the
    kernel kills it (SIGKILL) when the thread that started it ends. The media pool kills a worker
    that overruns its time limit; without this, the worker's ffmpeg would be orphaned and keep
    decoding. Cost: one prctl call in the child. Not Linux: nothing."""
    with contextlib.suppress(AttributeError):
        c = libc()
        if c is not None:
            c.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def end_stray_tasks(before: set[asyncio.Task[Any]], deadline_s: float = 5.0) -> None:
    """Cancel, until they end, the asyncio tasks started since `before` that outlived their task
    groups. SQLAlchemy's aiosqlite adapter closes a connection cancelled mid-query from a shielded
    task of its own; cancelled while it closes, that task awaits a stop the connection's thread,
    already gone, never answers. asyncio's runner cancels each leftover task once, then waits for
    them all: one such task held the exit for ever. Here each is cancelled as often as it asks."""
    me = asyncio.current_task()
    with anyio.move_on_after(deadline_s):
        while strays := [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]:
            for task in strays:
                task.cancel()
            await asyncio.wait(strays, timeout=0.05)
