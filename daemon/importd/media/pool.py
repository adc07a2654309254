"""A bounded process pool for CPU-bound extraction, with a per-file time limit.

Built on pebble's `ProcessPool`: unlike `concurrent.futures.ProcessPoolExecutor` it kills the worker
running a task that outlives its timeout (a hung decoder cannot be interrupted from Python, only
killed), replaces workers that die (a decoder segfault becomes `ProcessExpired`, not a broken pool),
and recycles workers after `max_tasks`. It is small, typed, maintained since 2013, and has no
dependencies of its own.

Awaiting uses `asyncio.wrap_future`: the daemon runs anyio on the asyncio backend. Cancelling the
awaiting task cancels the pebble future, which stops the worker if the task is already running.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar

import anyio
import pebble

from importd.media.failure import ExtractionFailure, describe

T = TypeVar("T")

# Workers are recycled after this many files: decoders leak and fragment memory on damaged input.
DEFAULT_MAX_TASKS_PER_WORKER = 500

# Extraction yields the CPU to the daemon's own process (hashing, the socket) when both want it.
DEFAULT_WORKER_NICENESS = 10

# Preloaded once in the fork server so each new worker starts with Pillow, numpy and friends imported.
_PRELOAD = ["importd.media.image", "importd.media.video"]


def default_pool_size() -> int:
    """Leave one core for hashing and the socket."""
    return max(1, (os.cpu_count() or 1) - 1)


class Priority(IntEnum):
    """New files go first; re-running a bumped extractor version waits for a free worker."""

    BACKGROUND = 0
    FOREGROUND = 1


class ExtractionPool:
    """Run extraction functions in worker processes; every outcome comes back as a value.

    `run(...)` returns the function's result, or an `ExtractionFailure` when the function raised, the
    time limit killed it, or its worker died. At most `workers` tasks are handed to pebble at once; the
    rest wait here, foreground before background, so a queue of re-runs never delays new files.
    `memory_limit_mb` caps each worker's heap (RLIMIT_DATA); None leaves it unlimited.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_tasks_per_worker: int = DEFAULT_MAX_TASKS_PER_WORKER,
        niceness: int = DEFAULT_WORKER_NICENESS,
        memory_limit_mb: int | None = None,
        silence_native_stderr: bool = True,
        start_method: str = "forkserver",
    ) -> None:
        self.workers = workers if workers is not None else default_pool_size()
        if self.workers < 1:
            raise ValueError("an extraction pool needs at least one worker")
        # fork() from the daemon would copy its threads' locks (anyio, ZeroMQ, SQLite) mid-state; the
        # fork server forks from a clean single-threaded process instead.
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            context.set_forkserver_preload(_PRELOAD)
        self._pool = pebble.ProcessPool(
            max_workers=self.workers,
            max_tasks=max_tasks_per_worker,
            initializer=_prepare_worker,
            initargs=(niceness, memory_limit_mb, silence_native_stderr),
            context=context,
        )
        self._free = self.workers
        self._waiting: dict[Priority, deque[anyio.Event]] = {p: deque() for p in Priority}
        self._closed = False

    async def run(
        self,
        extractor: str,
        fn: Callable[..., T],
        *args: object,
        timeout: float,
        kwargs: Mapping[str, object] | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> T | ExtractionFailure:
        """Run `fn(*args, **kwargs)` in a worker, killed after `timeout` seconds of running.

        `fn` must be importable by name (a module-level function) and its arguments picklable.
        """
        if self._closed:
            return ExtractionFailure(extractor, "extraction pool is closed")
        await self._acquire(priority)
        try:
            try:
                future = self._pool.schedule(fn, args=args, kwargs=kwargs or {}, timeout=timeout)
            except RuntimeError as error:  # the pool was stopped while this task waited
                return ExtractionFailure(extractor, describe(error))
            try:
                return await asyncio.wrap_future(future)
            except FutureTimeout:
                return ExtractionFailure(extractor, f"timed out after {timeout:g} s; the worker was killed")
            except pebble.ProcessExpired as error:
                return ExtractionFailure(extractor, f"worker died (exit code {error.exitcode})")
            except Exception as error:
                return ExtractionFailure(extractor, describe(error))
        finally:
            self._release()

    def close(self) -> None:
        """Stop accepting work, kill running extractions and wait for the workers to exit."""
        if self._closed:
            return
        self._closed = True
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join()

    def __enter__(self) -> ExtractionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _acquire(self, priority: Priority) -> None:
        ahead = any(self._waiting[p] for p in Priority if p >= priority)
        if self._free > 0 and not ahead:
            self._free -= 1
            return
        turn = anyio.Event()
        self._waiting[priority].append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # granted a slot just as we were cancelled: pass it on
                self._release()
            else:
                self._waiting[priority].remove(turn)
            raise

    def _release(self) -> None:
        for priority in sorted(Priority, reverse=True):
            if self._waiting[priority]:
                # The slot moves straight to the next waiter, so nobody can jump the queue.
                self._waiting[priority].popleft().set()
                return
        self._free += 1


@dataclass(frozen=True, slots=True)
class Measured(Generic[T]):
    """A result with the CPU time it cost (the worker's own plus its waited-for children, e.g.
    ffmpeg) and its wall time, for per-extractor figures."""

    value: T
    cpu_s: float
    wall_s: float


def measured(fn: Callable[..., T], *args: object, **kwargs: object) -> Measured[T]:
    """Call `fn` and time it; pass this to `ExtractionPool.run` with `fn` as the first argument."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn(*args, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Measured(value, time.process_time() - cpu + child_cpu, time.perf_counter() - wall)


def _prepare_worker(niceness: int, memory_limit_mb: int | None, silence_native_stderr: bool) -> None:
    if niceness:
        os.nice(niceness)
    if memory_limit_mb:
        # Fuzzed files can make a decoder allocate hundreds of megabytes (a 30 KB BLP in Pillow's
        # corpus takes 690 MB). With a data limit that becomes a MemoryError, reported as a failure,
        # instead of N workers pushing the server into swap.
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if silence_native_stderr:
        # C decoders (libtiff, libavcodec) print a line per damaged file straight to fd 2; in the
        # daemon that floods the journal, and the failure value already carries the reason.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
