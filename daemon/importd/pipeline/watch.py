"""Watch: inotify hints from watchfiles, one thread per root.

The watcher is only a hint; reconciliation is the truth. Facts that shape this module:
- watchfiles has no rename event, and a directory moved in reports only the directory, so every
  hint is re-checked with lstat and an added directory is rescanned;
- queue overflows are dropped silently, hence the periodic reconcile;
- the Rust side walks the tree when the watcher is created, which blocks: it runs in a thread;
- a name that is not UTF-8 makes every later `watch()` call raise WatchfilesRustInternalError,
  even on a new watcher, while that name exists: we reconcile the root, poll it meanwhile, and
  retry inotify with doubling back-off;
- hitting fs.inotify.max_user_watches fails with ENOSPC: the root falls back to polling and
  status says which sysctl to raise.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from importd.config import IgnoreRules

log = logging.getLogger("importd.watch")

CHANGE_ADDED = 1
CHANGE_MODIFIED = 2
CHANGE_DELETED = 3

WATCH_LIMIT_HINT = (
    "inotify watch limit reached (fs.inotify.max_user_watches={limit}); polling this root instead. "
    "Raise it: sysctl -w fs.inotify.max_user_watches=1048576 and persist it in /etc/sysctl.d/90-importd.conf"
)


class Notify(Protocol):
    def watch(self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: Any) -> Any: ...

    def close(self) -> None: ...


NotifyFactory = Callable[[str], Notify]


def rust_notify(path: str) -> Notify:
    from watchfiles._rust_notify import RustNotify

    try:
        return RustNotify([path], False, False, 300, True, False)  # type: ignore[no-any-return]
    except Exception as exc:
        if is_watch_limit(exc):
            raise
    # An unreadable folder fails the whole watch. ignore_permission_denied lets the rest be
    # watched, but it also hides every other watch error (the watch limit among them), so it is
    # only the second choice; the reconcile walk reports unreadable folders either way.
    return RustNotify([path], False, False, 300, True, True)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class PathHint:
    """Something happened at `relpath` (bytes, relative to the root): re-check it."""

    relpath: bytes
    added_dir_possible: bool


@dataclass(frozen=True, slots=True)
class WatcherDown:
    """The watcher failed; the root needs a reconcile. `limit` marks the inotify watch limit."""

    reason: str
    limit: bool = False


@dataclass(frozen=True, slots=True)
class WatcherUp:
    """The watcher is installed on the whole tree."""


WatchEvent = list[PathHint] | WatcherDown | WatcherUp


def interpret(changes: set[tuple[int, str]], root: Path, ignore: IgnoreRules) -> list[PathHint]:
    """Turn watchfiles' raw (change, path) pairs into hints relative to the root."""
    prefix = os.fsencode(str(root)) + b"/"
    hints: dict[bytes, bool] = {}
    for change, path in changes:
        raw = os.fsencode(path)
        if not raw.startswith(prefix):
            continue
        relpath = raw[len(prefix) :]
        if not relpath or ignore.path_ignored(os.fsdecode(relpath)):
            continue
        hints[relpath] = hints.get(relpath, False) or change == CHANGE_ADDED
    return [PathHint(p, added) for p, added in sorted(hints.items())]


def inotify_limit() -> str:
    try:
        return Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip()
    except OSError:
        return "?"


def is_watch_limit(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc).lower()
    return "watch limit" in text or "no space left on device" in text or "os error 28" in text


class RootWatcher:
    """Runs in a thread: creates the watcher, forwards batches, reports failures. Returns when
    `stop` is set or when the watcher failed (the caller decides about back-off)."""

    def __init__(
        self,
        root: Path,
        ignore: IgnoreRules,
        emit: Callable[[WatchEvent], None],
        factory: NotifyFactory = rust_notify,
        # Settling absorbs bursts already; a long debounce would only delay the first files.
        debounce_ms: int = 250,
        step_ms: int = 50,
    ) -> None:
        self.root = root
        self.ignore = ignore
        self.emit = emit
        self.factory = factory
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        try:
            notify = self.factory(str(self.root))
        except Exception as exc:
            if is_watch_limit(exc):
                self.emit(WatcherDown(WATCH_LIMIT_HINT.format(limit=inotify_limit()), limit=True))
            else:
                self.emit(WatcherDown(f"cannot watch: {exc}"))
            return
        self.ready.set()
        self.emit(WatcherUp())
        try:
            while not stop.is_set():
                try:
                    result = notify.watch(self.debounce_ms, self.step_ms, 1000, stop)
                except Exception as exc:
                    if is_watch_limit(exc):
                        self.emit(WatcherDown(WATCH_LIMIT_HINT.format(limit=inotify_limit()), limit=True))
                    else:
                        self.emit(WatcherDown(f"watcher failed: {exc}"))
                    return
                if result in ("stop", "signal"):
                    return
                if result == "timeout" or not isinstance(result, set):
                    continue
                hints = interpret(result, self.root, self.ignore)
                if hints:
                    self.emit(hints)
        finally:
            notify.close()
