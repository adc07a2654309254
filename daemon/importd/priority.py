"""Lower the CPU and I/O priority of the calling thread, for sweeps running inside the daemon.

Linux applies both per thread: `setpriority(PRIO_PROCESS, tid)` renices only that thread, and
`ioprio_set(IOPRIO_WHO_PROCESS, tid)` puts only its reads in the idle class, so the control socket
and new registrations keep their share. The idle class is honoured by the BFQ scheduler (and
by mq-deadline, which serves it last); with `none` the nice value is what remains. Threads
started by a lowered thread inherit both: the hasher's reader thread and blake3 thread pool,
which it makes per thread and per nice value for exactly that reason.

The nice value is the daemon's plus 10 (so 10 for a daemon at 0, 15 under systemd's Nice=5),
not 19: the sweep still gets about a tenth of a busy CPU instead of a seventieth, and a
lowered thread that holds the GIL when it is preempted gets it back in tens of milliseconds,
not hundreds, so it cannot hold up the event loop for long. When nothing else runs, the value
makes no difference.

An unprivileged process cannot raise a thread's priority back (RLIMIT_NICE is 0 by default), so
lowering a thread that is reused for other work (anyio's worker threads) lowers that work too:
`run_lowered` runs a function in a thread of its own that ends with it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable
from typing import TypeVar

from importd.runtime import libc

T = TypeVar("T")

LOWER_BY = 10
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
# (ioprio_set, ioprio_get) by machine; the syscall has no libc wrapper.
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "i686": (289, 290), "armv7l": (314, 315)}


def sweep_nice(by: int = LOWER_BY) -> int:
    """The nice value for sweeps: `by` more than the daemon's main thread, at most 19."""
    return min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + by)


def lower_thread_priority(by: int = LOWER_BY) -> list[str]:
    """Renice the calling thread to `sweep_nice(by)` and put its I/O in the idle class; returns
    what could not be done (empty when both worked), so the caller can log it and carry on.
    Calling it again changes nothing. For good: see `run_lowered` for work on a thread that is
    used for something else afterwards."""
    problems: list[str] = []
    tid = threading.get_native_id()
    try:
        nice = sweep_nice(by)
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:  # never raise it (nor fail trying)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        problems.append(f"cannot renice: {exc.strerror}")
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        problems.append(f"I/O priority not supported on {platform.machine()}")
        return problems
    value = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    c = libc()
    if c is None:
        problems.append("cannot set the idle I/O class: no C library")
    elif c.syscall(numbers[0], IOPRIO_WHO_PROCESS, tid, value) != 0:
        problems.append(f"cannot set the idle I/O class: {os.strerror(ctypes.get_errno())}")
    return problems


def run_lowered(
    work: Callable[[], T], by: int = LOWER_BY, on_problems: Callable[[list[str]], None] | None = None
) -> T:
    """`work()` in a new thread at lowered priority, which ends with it; its result, or its
    exception raised here. The calling thread only waits, so its own priority is untouched.
    `on_problems` hears what `lower_thread_priority` could not do."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def lowered() -> None:
        problems = lower_thread_priority(by)
        if problems and on_problems is not None:
            on_problems(problems)
        try:
            outcome.append(work())
        except BaseException as exc:  # re-raised in the waiting thread
            failure.append(exc)

    thread = threading.Thread(target=lowered, name="importd-lowered", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def thread_io_class(tid: int | None = None) -> int | None:
    """The I/O scheduling class of a thread (3 is idle), or None when it cannot be read."""
    numbers = _SYSCALLS.get(platform.machine())
    c = libc()
    if numbers is None or c is None:
        return None
    value = int(c.syscall(numbers[1], IOPRIO_WHO_PROCESS, tid or threading.get_native_id()))
    return None if value < 0 else value >> IOPRIO_CLASS_SHIFT
