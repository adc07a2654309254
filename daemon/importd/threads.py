"""Kernel names for the daemon's busy threads, so `top -H`, `ps -L` and /proc/PID/task tell the
walk from the catalog writer (Python leaves every thread named after the process)."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

from importd.runtime import libc

# prctl(2) option; the kernel keeps 15 bytes of a name.
_PR_SET_NAME = 15
_DEFAULT = b"importd"


def _set(name: bytes) -> None:
    """Called twice per catalog transaction: the library handle is looked up once."""
    try:
        c = libc()
        if c is not None:
            c.prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except AttributeError:  # no prctl (not Linux): names are a convenience only
        pass


@contextlib.contextmanager
def thread_named(name: str) -> Iterator[None]:
    """Name the calling (worker) thread for the duration (its first 15 bytes); pool threads get the
    default back. Cost: two prctl calls, about a microsecond each."""
    _set(name.encode()[:15])
    try:
        yield
    finally:
        _set(_DEFAULT)
