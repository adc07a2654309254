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
from importd.pipeline.reconcile import WalkError, describe_os_error
from importd.pipeline.watch import (
    Hint,
    NotifyFactory,
    Overflow,
    RootWatcher,
    WatcherDown,
    WatcherUp,
    WatchEvent,
)
from importd.targets import RootPlace

log = logging.getLogger("importd.pipeline")

WATCH_BACKOFF_MAX_S = 300.0
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

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def polling(self) -> bool:
        return self.config.watch == "poll" or self.watch_limit or self.watch_error is not None


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
        state = RootState(config, root_id, os.fsencode(str(config.path)))
        state.import_before_watch = config.watch == "inotify" and first_import
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
        """True when the root is online; otherwise it is set offline (with why) and False."""
        online, why = root_online(state.config)
        if not online:
            self.set_offline(state, why)
        return online

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
        self.start_watch(state)
        self._tg.start_soon(self._request_scan, state.root_id, b"", "after-import")

    def start_watch(self, state: RootState) -> None:
        if self._tg is None or state.stop_watch is not None:
            return
        stop = threading.Event()
        state.stop_watch = stop
        self._tg.start_soon(self._watch_root, state, stop)

    def stop_watch(self, state: RootState) -> None:
        if state.stop_watch is not None:
            state.stop_watch.set()
            state.stop_watch = None

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
                        state.watch_error = None
                        state.watch_limit = False
                        if state.state in ("starting", "polling"):
                            state.state = "watching"
                    else:
                        if state.watch_failures and watcher.ready.is_set():
                            state.watch_failures = 0
                        await self._on_hints(state, event)
        if state.stop_watch is stop:
            state.stop_watch = None

    async def _watcher_down(self, state: RootState, event: WatcherDown) -> None:
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
            if state.state == "offline":
                log.info("root %s back online", state.config.name, extra={"root": state.config.name})
                state.state = "starting"
                state.watch_error = None
                state.watch_limit = False
                await self._request_scan(state.root_id, b"", "online")
            want_inotify = state.config.watch == "inotify"
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
