"""Kernel names for the daemon's busy threads, so `top -H`, `ps -L` and /proc/PID/task tell the
walk from the catalog writer (Python leaves every thread named after the process)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator

_PR_SET_NAME = 15
_DEFAULT = b"importd"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _set(name: bytes) -> None:
    """Called twice per catalog transaction: the library handle is looked up once."""
    try:
        libc = _libc()
        if libc is not None:
            libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except AttributeError:  # no prctl (not Linux): names are a convenience only
        pass


@contextlib.contextmanager
def thread_named(name: str) -> Iterator[None]:
    """Name the calling (worker) thread for the duration; pool threads get the default back."""
    _set(name.encode()[:15])
    try:
        yield
    finally:
        _set(_DEFAULT)
