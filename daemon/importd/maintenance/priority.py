"""Lower the CPU and I/O priority of the calling thread, for sweeps running inside the daemon.

Linux applies both per thread: `setpriority(PRIO_PROCESS, tid)` renices only that thread, and
`ioprio_set(IOPRIO_WHO_PROCESS, tid)` puts only its reads in the idle class, so the control socket
and new registrations keep their share. The idle class is honoured by the BFQ scheduler and
ignored by mq-deadline and none, where the nice value is what remains. blake3's own worker threads
(used for files of 16 MiB and more) belong to whichever thread started them first and keep that
thread's priority.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
# (ioprio_set, ioprio_get) by machine; the syscall has no libc wrapper.
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "i686": (289, 290), "armv7l": (314, 315)}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def lower_thread_priority(nice: int = 19) -> list[str]:
    """Renice the calling thread and put its I/O in the idle class; returns what could not be
    done (empty when both worked), so the caller can log it and carry on."""
    problems: list[str] = []
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        problems.append(f"cannot renice: {exc.strerror}")
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        problems.append(f"I/O priority not supported on {platform.machine()}")
        return problems
    value = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    libc = _libc()
    if libc.syscall(numbers[0], IOPRIO_WHO_PROCESS, tid, value) != 0:
        problems.append(f"cannot set the idle I/O class: {os.strerror(ctypes.get_errno())}")
    return problems


def thread_io_class(tid: int | None = None) -> int | None:
    """The I/O scheduling class of a thread (3 is idle), or None when it cannot be read."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None
    value = int(_libc().syscall(numbers[1], IOPRIO_WHO_PROCESS, tid or threading.get_native_id()))
    return None if value < 0 else value >> IOPRIO_CLASS_SHIFT
