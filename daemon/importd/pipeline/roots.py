"""Roots: each configured root's state, whether it is online, its watcher's lifecycle and back-off,
and the scheduler that polls, reconciles periodically and retries failed watchers.

`Roots` knows nothing of scans or files: it is handed two narrow callbacks, one to ask for a
reconcile (`request_scan`) and one for the watcher's path hints (`on_hints`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from importd.config import RootConfig
from importd.paths import display
from importd.pipeline.reconcile import TOO_LONG, WalkError, describe_os_error, too_long
from importd.pipeline.watch import (
    Hint,
    NotifyFactory,
    Overflow,
    PathHint,
    RenameHint,
    RootWatcher,
    WatcherDown,
    WatcherUp,
    WatchEvent,
)
from importd.targets import RootPlace

log = logging.getLogger("importd.pipeline")

WATCH_BACKOFF_MAX_S = 300.0
# A watcher up this long without failing is healthy: its next failure starts the back-off anew.
WATCH_HEALTHY_S = 60.0
# How long `status` says that a root's folder was found replaced under its path.
FOLDER_CHANGE_NOTICE_S = 3600.0
SCHEDULER_TICK_S = 1.0

RequestScan = Callable[[int, bytes, str], Coroutine[object, object, object]]
OnHints = Callable[["RootState", list[Hint]], Awaitable[None]]


@dataclass
class RootState:
    config: RootConfig
    root_id: int
    raw_path: bytes
    state: str = "starting"  # watching | polling | offline | scanning
    watch_error: str | None = None
    watch_limit: bool = False
    watch_failures: int = 0
    next_watch_try: float = 0.0
    # When the last full walk of the root ended; the next periodic one is due an interval later
    # (which interval depends on whether the root is polled right now).
    last_full_scan: float = 0.0
    walk_errors: list[WalkError] = field(default_factory=list)
    stop_watch: threading.Event | None = None
    scanning: int = 0
    # Set once the watcher is up or has failed: a start-up walk waits for it (bounded), so no
    # folder is walked before its watch exists.
    watch_settled: anyio.Event = field(default_factory=anyio.Event)
    # A root never reconciled before (its first import) is read before it is watched: placing
    # the watches walks the whole tree once more, and a cold import is the walk that would wait
    # for it. Once that first walk ends, the watch is placed and a second reconcile, which only
    # stats, picks up whatever changed in between.
    import_before_watch: bool = False
    # A full walk is queued that will run behind the next watch (it waits for `watch_settled`):
    # that watch needs no reconcile of its own. Every other (re)start of a watch is followed by
    # one, for what changed while no watch was in place.
    walk_follows_watch: bool = False
    # When the running watcher came up (0: no watcher up): healthy for WATCH_HEALTHY_S resets
    # the back-off.
    watch_up_since: float = 0.0
    # The root folder itself, (st_dev, st_ino), as first seen online, and whether it was a mount
    # point then: a folder swapped under the root's path, or a mount that went away and left its
    # empty mount point, is told from the root it was.
    identity: tuple[int, int] | None = None
    mount_point: bool = False
    # The folder under the root's path is another one now: watch it anew and reconcile it.
    rearm: str | None = None
    # When (wall clock) the folder was found replaced while the root was online (swapped):
    # `status` says so for a while (FOLDER_CHANGE_NOTICE_S).
    folder_changed: float = 0.0
    # A whole walk of this folder (this identity) found files: from then on, a walk that finds it
    # empty is believed (its files were deleted). Until then, an empty folder where the catalog has
    # files is taken for a bare mount point (a daemon started while the share was not mounted).
    folder_had_files: bool = False
    # The last walk found the root folder empty while the catalog has files there: an unmounted
    # share's bare mount point. Offline until something is in it again.
    empty_offline: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def polling(self) -> bool:
        return self.config.watch == "poll" or self.watch_limit or self.watch_error is not None


def is_mount_point(path: bytes) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def folder_has_entries(path: bytes) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is not None
    except OSError:
        return False


def root_online(root: RootConfig) -> tuple[bool, str]:
    """A root is offline when its folder is gone or its marker file is: an unmounted share must
    never look like a mass deletion."""
    try:
        if not root.path.is_dir():
            return False, f"{root.path} is not a directory (unmounted?)"
        if root.marker and not (root.path / root.marker).exists():
            return False, f"marker {root.marker!r} not found in {root.path} (unmounted?)"
    except OSError as exc:
        return False, f"{root.path}: {describe_os_error(exc)}"
    return True, ""


class Roots:
    """The configured roots by id, and everything that keeps each one watched or polled."""

    def __init__(
        self,
        request_scan: RequestScan,
        on_hints: OnHints,
        reconcile_interval: float,
        notify_factory: NotifyFactory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.by_id: dict[int, RootState] = {}
        self.reconcile_interval = reconcile_interval
        self._request_scan = request_scan
        self._on_hints = on_hints
        self._notify_factory = notify_factory
        self._clock = clock
        self._tg: TaskGroup | None = None
        self._watch_limiter = anyio.CapacityLimiter(1024)

    def bind(self, tg: TaskGroup) -> None:
        """The task group the watchers run in (the pipeline's)."""
        self._tg = tg

    def get(self, root_id: int) -> RootState | None:
        return self.by_id.get(root_id)

    def paths(self) -> dict[int, bytes]:
        return {rid: st.raw_path for rid, st in self.by_id.items()}

    def names(self) -> dict[int, str]:
        return {rid: st.config.name for rid, st in self.by_id.items()}

    def places(self) -> list[RootPlace]:
        """The roots as target resolution sees them (`importd.targets`)."""
        return [RootPlace(rid, st.config.name, st.raw_path) for rid, st in self.by_id.items()]

    def add(self, root_id: int, config: RootConfig, first_import: bool) -> RootState:
        """A root, whose start-up walk the caller queues (it waits for the first watch)."""
        state = RootState(config, root_id, os.fsencode(str(config.path)))
        state.import_before_watch = config.watch == "inotify" and first_import
        state.walk_follows_watch = not state.import_before_watch
        self.by_id[root_id] = state
        log.info("root %s at %s (%s)", config.name, config.path, config.watch, extra={"root": config.name})
        return state

    def remove(self, root_id: int) -> None:
        state = self.by_id.pop(root_id)
        self.stop_watch(state)
        log.info("root %s removed or changed", state.config.name, extra={"root": state.config.name})

    def stop_all(self) -> None:
        for state in self.by_id.values():
            self.stop_watch(state)

    # ----- online / offline ----------------------------------------------------------------

    def check_online(self, state: RootState) -> bool:
        """True when the root is online; otherwise it is set offline (with why) and False.
        A root whose folder is another one than before (swapped, remounted) is online and
        marked to be watched anew (`rearm`); one whose mount went away is offline."""
        online, why = root_online(state.config)
        if online:
            online, why = self._same_folder(state)
        if not online:
            self.set_offline(state, why)
        return online

    def _same_folder(self, state: RootState) -> tuple[bool, str]:
        try:
            st = os.stat(state.raw_path)
        except OSError as exc:
            return False, f"{state.config.path}: {describe_os_error(exc)}"
        identity = (st.st_dev, st.st_ino)
        if state.identity is None:
            state.identity, state.mount_point = identity, is_mount_point(state.raw_path)
        elif identity != state.identity:
            mounted = is_mount_point(state.raw_path)
            if state.mount_point and not mounted:
                return False, f"{state.config.path} is no longer a mount point (unmounted?)"
            log.warning(
                "root %s: the folder at %s is another one now (swapped or remounted): watching it anew",
                state.config.name,
                state.config.path,
                extra={"root": state.config.name},
            )
            if state.state != "offline":
                state.folder_changed = self._clock()
            state.identity, state.mount_point = identity, mounted
            state.folder_had_files = False
            state.rearm = "root-changed"
            state.empty_offline = False
            self.stop_watch(state)
        if state.empty_offline:
            if not folder_has_entries(state.raw_path):
                return False, f"{state.config.path} is empty while the catalog has files there (unmounted?)"
            state.empty_offline = False
            state.rearm = state.rearm or "online"
        return True, ""

    def set_empty(self, state: RootState) -> None:
        """A walk found the root folder bare, never seen with files, while the catalog has files
        under it: a share's mount point without its share, not a root whose every file was
        deleted at once."""
        state.empty_offline = True
        self.set_offline(
            state, f"{state.config.path} is empty while the catalog has files there (unmounted?)"
        )

    def set_offline(self, state: RootState, why: str) -> None:
        if state.state != "offline":
            log.warning("root %s offline: %s", state.config.name, why, extra={"root": state.config.name})
        state.state = "offline"
        state.watch_error = why
        self.stop_watch(state)

    # ----- the watcher -----------------------------------------------------------------------

    def watch_after_import(self, state: RootState, stopping: bool) -> None:
        """A root's first import has ended (however it ended): watch it from now on, and walk it
        once more behind the watch (that walk waits for it) for what changed meanwhile."""
        state.import_before_watch = False
        if self._tg is None or stopping or self.by_id.get(state.root_id) is not state:
            return
        if state.state == "offline":
            return  # the scheduler watches and reconciles it when it is back
        if state.state == "watching":
            state.state = "starting"  # until the watcher says it is in place
        self.start_watch(state, walk_follows=True)
        self._tg.start_soon(self._request_scan, state.root_id, b"", "after-import")

    def start_watch(self, state: RootState, walk_follows: bool = False) -> None:
        """Starts the root's watcher. `walk_follows`: the caller queues a full walk behind it;
        otherwise the watcher, once in place, asks for one itself (trigger `watch-restart`)."""
        if self._tg is None or state.stop_watch is not None:
            return
        if walk_follows:
            state.walk_follows_watch = True
        if state.watch_settled.is_set():
            state.watch_settled = anyio.Event()  # a walk queued from now on waits for this watch
        stop = threading.Event()
        state.stop_watch = stop
        self._tg.start_soon(self._watch_root, state, stop)

    def stop_watch(self, state: RootState) -> None:
        if state.stop_watch is not None:
            state.stop_watch.set()
            state.stop_watch = None
        state.watch_up_since = 0.0

    async def _watch_root(self, state: RootState, stop: threading.Event) -> None:
        send, recv = anyio.create_memory_object_stream[WatchEvent](4096)

        def emit(event: WatchEvent) -> None:
            # ClosedResource/BrokenResource/RuntimeError: the pipeline stopped; the thread ends.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
                anyio.from_thread.run(send.send, event)

        watcher = RootWatcher(state.config.path, state.config.ignore, emit, factory=self._notify_factory)

        async def run_thread() -> None:
            try:
                await anyio.to_thread.run_sync(
                    watcher.run, stop, abandon_on_cancel=True, limiter=self._watch_limiter
                )
            finally:
                send.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_thread)
            async with recv:
                async for event in recv:
                    if isinstance(event, WatcherDown | WatcherUp):
                        state.watch_settled.set()
                    if isinstance(event, Overflow):
                        # The kernel dropped events: only a walk knows what they were.
                        await self._request_scan(state.root_id, b"", "watch-overflow")
                    elif isinstance(event, WatcherDown):
                        await self._watcher_down(state, event)
                    elif isinstance(event, WatcherUp):
                        await self._watcher_up(state)
                    else:
                        hints = self._reachable(state, event)
                        await self._rescan_readable(state, hints)
                        if hints:
                            await self._on_hints(state, hints)
        if state.stop_watch is stop:
            state.stop_watch = None

    async def _watcher_up(self, state: RootState) -> None:
        state.watch_error = None
        state.watch_limit = False
        state.watch_up_since = self._clock()
        if state.state in ("starting", "polling"):
            state.state = "watching"
        if state.walk_follows_watch:
            state.walk_follows_watch = False
        else:
            # Nothing was watched between the last walk and now: only a walk knows what changed.
            await self._request_scan(state.root_id, b"", "watch-restart")

    def _reachable(self, state: RootState, hints: list[Hint]) -> list[Hint]:
        """The hints whose path a system call can take. One past PATH_MAX cannot be statted
        (ENAMETOOLONG), which must not read as gone: it is listed among the root's unreadable
        paths (`importctl errors`) and logged once, and the rest goes on."""
        root = state.raw_path
        if not any(too_long(root, h.new if isinstance(h, RenameHint) else h.relpath) for h in hints):
            return hints
        out: list[Hint] = []
        for hint in hints:
            if isinstance(hint, RenameHint) and too_long(root, hint.new):
                self._unreachable(state, hint.new)
                if not too_long(root, hint.old):
                    out.append(PathHint(hint.old, False))  # moved where it cannot be followed
            elif isinstance(hint, PathHint) and too_long(root, hint.relpath):
                self._unreachable(state, hint.relpath)
            else:
                out.append(hint)
        return out

    def _unreachable(self, state: RootState, relpath: bytes) -> None:
        if any(err.relpath == relpath for err in state.walk_errors):
            return
        state.walk_errors = [*state.walk_errors, WalkError(relpath, TOO_LONG)]
        log.warning(
            "cannot read %s: %s",
            display(relpath),
            TOO_LONG,
            extra={"root": state.config.name, "path": display(relpath)},
        )

    async def _rescan_readable(self, state: RootState, hints: list[Hint]) -> None:
        """A folder the last walk could not read whose attributes changed (a chmod back) is
        walked again now, not at the next reconcile."""
        if not state.walk_errors:
            return
        unreadable = {err.relpath for err in state.walk_errors}
        for hint in hints:
            # (A folder that appeared, or was not watched, is walked by the wiring anyway.)
            if isinstance(hint, PathHint) and not hint.added_dir_possible and hint.relpath in unreadable:
                await self._request_scan(state.root_id, hint.relpath, "watch")

    async def _watcher_down(self, state: RootState, event: WatcherDown) -> None:
        state.watch_up_since = 0.0
        state.walk_follows_watch = False  # a walk waiting for this watch went on without it
        if event.root and (not self.check_online(state) or state.rearm):
            # The root folder went away (unmounted, or another folder in its place): no failure
            # of the watcher, no back-off; the scheduler watches it again when it is there.
            state.watch_settled.set()
            return
        state.watch_failures += 1
        delay = min(WATCH_BACKOFF_MAX_S, 2.0 ** min(state.watch_failures, 12))
        state.watch_error = event.reason
        state.watch_limit = event.limit
        state.next_watch_try = self._clock() + (WATCH_BACKOFF_MAX_S if event.limit else delay)
        if state.state != "offline":
            state.state = "polling"
        log.warning(
            "watcher for %s: %s; reconciling, polling every %.0fs, retrying inotify in %.0fs",
            state.config.name,
            event.reason,
            state.config.poll_interval,
            state.next_watch_try - self._clock(),
            extra={"root": state.config.name},
        )
        await self._request_scan(state.root_id, b"", "watcher-failure")

    # ----- scheduler: offline roots, polling, periodic reconcile, watcher retries -------------

    async def run_scheduler(self) -> None:
        while True:
            await self.tick()
            await anyio.sleep(SCHEDULER_TICK_S)

    async def tick(self) -> None:
        """One pass of the scheduler over every root (the clock is the one given)."""
        now = self._clock()
        for state in list(self.by_id.values()):
            if not self.check_online(state):
                continue
            want_inotify = state.config.watch == "inotify"
            if state.state == "offline" or state.rearm:
                trigger = "online" if state.state == "offline" else state.rearm or "online"
                log.info(
                    "root %s %s: watching and reconciling it",
                    state.config.name,
                    "back online" if trigger == "online" else "is another folder now",
                    extra={"root": state.config.name},
                )
                state.rearm = None
                if state.state != "scanning":
                    state.state = "starting"
                state.watch_error = None
                state.watch_limit = False
                state.watch_failures = 0
                state.next_watch_try = 0.0
                if want_inotify and not state.import_before_watch:
                    # The watch first: the walk then waits for it, so nothing falls between.
                    self.start_watch(state, walk_follows=True)
                await self._request_scan(state.root_id, b"", trigger)
            if (
                state.watch_failures
                and state.watch_up_since
                and now - state.watch_up_since >= WATCH_HEALTHY_S
            ):
                state.watch_failures = 0  # healthy again: the next failure retries after 2 s
            if (
                want_inotify
                and state.stop_watch is None
                and now >= state.next_watch_try
                and not state.import_before_watch
            ):
                self.start_watch(state)
            if state.state == "starting" and not want_inotify:
                state.state = "polling"
            interval = state.config.poll_interval if state.polling else self.reconcile_interval
            if not state.scanning and state.last_full_scan and now >= state.last_full_scan + interval:
                state.last_full_scan = now  # until this one ends
                await self._request_scan(state.root_id, b"", "poll" if state.polling else "periodic")
