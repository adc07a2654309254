"""Watch: the kernel's inotify, one thread per root; names stay bytes from the kernel to the pipeline.

The watcher is only a hint; reconciliation is the truth. Facts that shape this module:
- a file name is whatever bytes the kernel gives (Latin-1, Shift-JIS, newlines): names are never
  decoded, so no name can fail a batch (watchfiles decodes every path and raises for the whole
  batch on the first one that is not UTF-8; `tests/unit/importd/pipeline/test_watch.py` shows it);
- IN_OPEN and IN_ACCESS are not watched: importd's own reads (hashing, extraction) never wake it;
- IN_MODIFY is watched beside IN_CLOSE_WRITE: a file written through mmap, or appended to while
  left open (a recording, a log), reports nothing else until it is closed, and a hint per batch
  is cheap (events of a batch are gathered for GATHER_MS and one path gives one hint);
- IN_MOVED_FROM/IN_MOVED_TO carry a cookie: the halves of one rename are paired into a
  `RenameHint`, so the pipeline lets a row follow its file without waiting for settle; a half
  left alone is a disappearance or an arrival, re-checked like any other hint;
- inotify is not recursive: a watch is added for every folder, and for each folder that appears
  (its own contents, written before its watch existed, are found by rescanning it);
- a queue overflow (IN_Q_OVERFLOW) loses events: the watches are placed again and the root is
  reconciled (`Overflow`);
- hitting fs.inotify.max_user_watches fails with ENOSPC: the root falls back to polling and
  status says which sysctl to raise.

Reading the kernel's records (`KernelInotify`) is I/O; turning them into hints (`EventInterpreter`)
is a pure function of the records, the watch table and the clock, tested with scripted events.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from importd.config import IgnoreRules

log = logging.getLogger("importd.watch")

# inotify(7): kernel ABI, the same on every Linux architecture.
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

FOLDER_MASK = (
    IN_CREATE
    | IN_CLOSE_WRITE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
"""Every folder's watch. IN_Q_OVERFLOW, IN_UNMOUNT and IN_IGNORED are always reported."""

# Events of a batch are gathered this long after the first one: bursts (a copy's writes) fold
# into one hint per path, and both halves of a rename nearly always land in the same batch.
GATHER_MS = 50
# A IN_MOVED_FROM still alone this long after it was read is a file moved out of the root.
PAIR_WINDOW_S = 0.2

WATCH_LIMIT_HINT = (
    "inotify watch limit reached (fs.inotify.max_user_watches={limit}); polling this root instead. "
    "Raise it: sysctl -w fs.inotify.max_user_watches=1048576 and persist it in /etc/sysctl.d/90-importd.conf"
)

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class RawEvent(NamedTuple):
    """One record as the kernel wrote it; `name` is the raw bytes, without padding."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse_events(data: bytes) -> list[RawEvent]:
    events: list[RawEvent] = []
    pos = 0
    size = _HEADER.size
    while pos + size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, pos)
        name = data[pos + size : pos + size + length].split(b"\0", 1)[0]
        events.append(RawEvent(wd, mask, cookie, name))
        pos += size + length
    return events


class Notify(Protocol):
    """An inotify instance as the watcher uses it (a scripted fake in tests)."""

    def add_watch(self, path: bytes, mask: int) -> int: ...

    def rm_watch(self, wd: int) -> None: ...

    def read(self, timeout_ms: int) -> list[RawEvent]:
        """The records waiting (after gathering for GATHER_MS), or [] after `timeout_ms`."""
        ...

    def close(self) -> None: ...


NotifyFactory = Callable[[], Notify]


class KernelInotify:
    """inotify_simple's inotify instance (init, add and remove watches, errors as OSError); the
    records are read from its file descriptor and parsed here, so names stay bytes (its own
    `read()` decodes them)."""

    READ_SIZE = 1 << 18
    MAX_CHUNKS = 16

    def __init__(self) -> None:
        from inotify_simple import INotify

        self._inotify = INotify(nonblocking=True)
        self._poll = select.poll()
        self._poll.register(self._inotify.fileno(), select.POLLIN)

    def add_watch(self, path: bytes, mask: int) -> int:
        return int(self._inotify.add_watch(path, mask))

    def rm_watch(self, wd: int) -> None:
        self._inotify.rm_watch(wd)

    def read(self, timeout_ms: int) -> list[RawEvent]:
        if not self._poll.poll(timeout_ms):
            return []
        time.sleep(GATHER_MS / 1000)
        chunks: list[bytes] = []
        # Until the queue is empty, bounded: a burst that never pauses still yields batches.
        for _ in range(self.MAX_CHUNKS):
            try:
                chunks.append(os.read(self._inotify.fileno(), self.READ_SIZE))
            except BlockingIOError:
                break
        return parse_events(b"".join(chunks))

    def close(self) -> None:
        self._inotify.close()


def kernel_inotify() -> Notify:
    return KernelInotify()


@dataclass(frozen=True, slots=True)
class PathHint:
    """Something happened at `relpath` (bytes, relative to the root): re-check it."""

    relpath: bytes
    added_dir_possible: bool


@dataclass(frozen=True, slots=True)
class RenameHint:
    """`old` was renamed to `new` inside the root (a paired IN_MOVED_FROM/IN_MOVED_TO)."""

    old: bytes
    new: bytes
    is_dir: bool


Hint = PathHint | RenameHint


@dataclass(frozen=True, slots=True)
class WatcherDown:
    """The watcher failed; the root needs a reconcile. `limit` marks the inotify watch limit;
    `root` a watch on the root folder itself that ended (unmounted, moved, deleted): the root
    may be gone, or another folder may stand at its path."""

    reason: str
    limit: bool = False
    root: bool = False


@dataclass(frozen=True, slots=True)
class WatcherUp:
    """The watcher is installed on the whole tree."""


@dataclass(frozen=True, slots=True)
class Overflow:
    """The kernel's queue overflowed and events were lost: the root needs a reconcile."""


WatchEvent = list[Hint] | WatcherDown | WatcherUp | Overflow


@dataclass(slots=True)
class _Pending:
    relpath: bytes
    is_dir: bool
    read_at: float


@dataclass
class Interpreted:
    """What one batch of records means: hints, folders to watch, and what failed."""

    hints: list[Hint] = field(default_factory=list)
    new_folders: list[bytes] = field(default_factory=list)
    left_folders: list[bytes] = field(default_factory=list)
    overflow: bool = False
    down: str | None = None
    down_root: bool = False


class EventInterpreter:
    """The watch table (wd -> folder relative to the root, b"" for the root) and the pairing of
    renames. Pure: the records and the clock are passed in."""

    def __init__(self, ignore: IgnoreRules) -> None:
        self.ignore = ignore
        self.folders: dict[int, bytes] = {}
        self._watched_paths: dict[bytes, int] = {}  # the reverse of `folders`
        self._moved_from: dict[int, _Pending] = {}  # cookie -> the first half of a rename

    @property
    def pairing(self) -> bool:
        """A IN_MOVED_FROM waits for its other half."""
        return bool(self._moved_from)

    def watched(self, wd: int, relpath: bytes) -> None:
        self.folders[wd] = relpath
        self._watched_paths[relpath] = wd

    def unwatched(self, wd: int) -> None:
        relpath = self.folders.pop(wd, None)
        if relpath is not None and self._watched_paths.get(relpath) == wd:
            del self._watched_paths[relpath]

    def is_watched(self, relpath: bytes) -> bool:
        return relpath in self._watched_paths

    def ignored(self, relpath: bytes) -> bool:
        return bool(relpath) and self.ignore.path_ignored(os.fsdecode(relpath))

    def wds_under(self, relpath: bytes) -> list[int]:
        prefix = relpath + b"/"
        return [wd for wd, p in self.folders.items() if p == relpath or p.startswith(prefix)]

    def next_timeout_ms(self, now: float, idle_ms: int) -> int:
        """How long the next read may wait: a lone IN_MOVED_FROM must be given up in time."""
        if not self._moved_from:
            return idle_ms
        oldest = min(p.read_at for p in self._moved_from.values())
        return max(0, min(idle_ms, int((oldest + PAIR_WINDOW_S - now) * 1000) + 1))

    def interpret(self, events: list[RawEvent], now: float) -> Interpreted:
        out = Interpreted()
        seen: dict[bytes, int] = {}  # relpath -> index of its PathHint in out.hints
        superseded: set[int] = set()  # hints of a path that a rename of it then explains

        def path_hint(relpath: bytes, added: bool) -> None:
            if self.ignored(relpath):
                return
            i = seen.get(relpath)
            if i is None:
                seen[relpath] = len(out.hints)
                out.hints.append(PathHint(relpath, added))
            elif added:
                out.hints[i] = PathHint(relpath, True)

        for ev in events:
            if ev.mask & IN_Q_OVERFLOW:
                out.overflow = True
                continue
            folder = self.folders.get(ev.wd)
            if folder is None:
                continue  # a watch already removed: its last records
            if ev.mask & IN_IGNORED:
                self.unwatched(ev.wd)
                if not folder and out.down is None:
                    out.down = "the root folder is no longer watched (deleted, moved or unmounted)"
                    out.down_root = True
                continue
            if ev.mask & (IN_UNMOUNT | IN_DELETE_SELF | IN_MOVE_SELF):
                if not folder and out.down is None:
                    out.down = "the root folder was unmounted, deleted or moved"
                    out.down_root = True
                continue  # a sub-folder's own events are reported by its parent
            if not ev.name:
                continue
            relpath = folder + b"/" + ev.name if folder else ev.name
            is_dir = bool(ev.mask & IN_ISDIR)
            if ev.mask & IN_MOVED_FROM:
                self._moved_from[ev.cookie] = _Pending(relpath, is_dir, now)
            elif ev.mask & IN_MOVED_TO:
                first = self._moved_from.pop(ev.cookie, None)
                if first is None:
                    path_hint(relpath, True)  # moved in from outside the root: new
                    if is_dir and not self.ignored(relpath):
                        out.new_folders.append(relpath)
                elif self.ignored(first.relpath) and self.ignored(relpath):
                    continue
                elif self.ignored(first.relpath) or self.ignored(relpath):
                    # Into or out of an ignored name: one side only is ours.
                    path_hint(first.relpath, False)
                    path_hint(relpath, True)
                    if is_dir and not self.ignored(relpath):
                        out.new_folders.append(relpath)
                else:
                    if is_dir:
                        self._rename_folders(first.relpath, relpath)
                    earlier = seen.pop(first.relpath, None)
                    if earlier is not None:
                        superseded.add(earlier)
                    seen.pop(relpath, None)
                    out.hints.append(RenameHint(first.relpath, relpath, is_dir))
            elif is_dir and ev.mask & IN_ATTRIB and not self.is_watched(relpath):
                # A folder without a watch (it could not be read when the tree was watched)
                # whose permissions changed: watch it now and walk it (it may be readable again).
                path_hint(relpath, True)
                if not self.ignored(relpath):
                    out.new_folders.append(relpath)
            else:
                path_hint(relpath, bool(ev.mask & IN_CREATE))
                if is_dir and ev.mask & IN_CREATE and not self.ignored(relpath):
                    out.new_folders.append(relpath)
        for cookie, pending in list(self._moved_from.items()):
            if now - pending.read_at >= PAIR_WINDOW_S:
                # Moved out of the root (or its pair was lost): gone.
                del self._moved_from[cookie]
                path_hint(pending.relpath, False)
                if pending.is_dir:
                    out.left_folders.append(pending.relpath)
        if superseded:
            out.hints = [h for i, h in enumerate(out.hints) if i not in superseded]
        return out

    def _rename_folders(self, old: bytes, new: bytes) -> None:
        cut = len(old)
        for wd in self.wds_under(old):
            moved = new + self.folders[wd][cut:]
            self.unwatched(wd)
            self.watched(wd, moved)


class RootWatcher:
    """Runs in a thread: places the watches, forwards batches of hints, reports failures.
    Returns when `stop` is set or when the watcher failed (the caller decides about back-off)."""

    def __init__(
        self,
        root: Path,
        ignore: IgnoreRules,
        emit: Callable[[WatchEvent], None],
        factory: NotifyFactory = kernel_inotify,
        step_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.raw_root = os.fsencode(str(root))
        self.ignore = ignore
        self.emit = emit
        self.factory = factory
        self.step_ms = step_ms
        self.clock = clock
        self.ready = threading.Event()
        self.table = EventInterpreter(ignore)

    def run(self, stop: threading.Event) -> None:
        try:
            notify = self.factory()
        except Exception as exc:
            self._down(exc, "cannot watch")
            return
        try:
            try:
                self._watch_tree(notify, b"", root=True)
            except Exception as exc:
                self._down(exc, "cannot watch")
                return
            self.ready.set()
            self.emit(WatcherUp())
            while not stop.is_set():
                try:
                    events = notify.read(self.table.next_timeout_ms(self.clock(), self.step_ms))
                    if stop.is_set():
                        return
                    if not events and not self.table.pairing:
                        continue
                    batch = self.table.interpret(events, self.clock())
                    if batch.down is not None:
                        self.emit(WatcherDown(batch.down, root=batch.down_root))
                        return
                    for relpath in batch.left_folders:
                        # Moved out of the root: its watches would report from elsewhere.
                        for wd in self.table.wds_under(relpath):
                            self._unwatch(notify, wd)
                    for relpath in batch.new_folders:
                        self._watch_tree(notify, relpath)
                    if batch.overflow:
                        log.warning("inotify queue overflowed under %s: reconciling it", self.root)
                        self._watch_tree(notify, b"")  # folders made meanwhile have no watch yet
                        self.emit(Overflow())
                    if batch.hints:
                        self.emit(batch.hints)
                except Exception as exc:
                    self._down(exc, "watcher failed")
                    return
        finally:
            notify.close()

    def _down(self, exc: BaseException, what: str) -> None:
        if is_watch_limit(exc):
            self.emit(WatcherDown(WATCH_LIMIT_HINT.format(limit=inotify_limit()), limit=True))
        else:
            self.emit(WatcherDown(f"{what}: {exc}"))

    def _watch_tree(self, notify: Notify, top: bytes, root: bool = False) -> None:
        """A watch on `top` and every folder below it (symlinks are not followed). A folder that
        vanished or cannot be read is skipped (the reconcile walk reports unreadable folders);
        the watch limit, and any failure on the root itself, raise."""
        for relpath in self._folders(top):
            path = self.raw_root + b"/" + relpath if relpath else self.raw_root
            try:
                wd = notify.add_watch(path, FOLDER_MASK)
            except OSError as exc:
                if exc.errno == errno.ENOSPC or (root and not relpath):
                    raise
                continue
            self.table.watched(wd, relpath)

    def _folders(self, top: bytes) -> Iterator[bytes]:
        stack = [top]
        while stack:
            relpath = stack.pop()
            yield relpath
            path = self.raw_root + b"/" + relpath if relpath else self.raw_root
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            child = relpath + b"/" + entry.name if relpath else entry.name
                            if not self.table.ignored(child):
                                stack.append(child)
            except OSError:
                continue

    def _unwatch(self, notify: Notify, wd: int) -> None:
        self.table.unwatched(wd)
        with contextlib.suppress(OSError):  # already gone with its folder
            notify.rm_watch(wd)


def inotify_limit() -> str:
    try:
        return Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip()
    except OSError:
        return "?"


def is_watch_limit(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
