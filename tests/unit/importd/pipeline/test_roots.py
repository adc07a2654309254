"""roots: the scheduler's decisions with an injected clock, and the watcher's lifecycle and
back-off driven by a scripted watcher; real folders in tmp_path for online/offline."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from importd.config import RootConfig
from importd.pipeline.reconcile import PATH_MAX, TOO_LONG, WalkError
from importd.pipeline.roots import WATCH_BACKOFF_MAX_S, WATCH_HEALTHY_S, Roots, RootState, root_online
from importd.pipeline.watch import (
    IN_ATTRIB,
    IN_CREATE,
    IN_ISDIR,
    IN_Q_OVERFLOW,
    Hint,
    PathHint,
    RawEvent,
    RenameHint,
    WatcherDown,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedNotify:
    """An inotify that hands out watch descriptors, reads the scripted batches (an exception is
    raised), then nothing (waiting a little, as the kernel's read waits)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)

    def add_watch(self, path: bytes, mask: int) -> int:
        return 1

    def rm_watch(self, wd: int) -> None:
        pass

    def read(self, timeout_ms: int) -> list[RawEvent]:
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item  # type: ignore[no-any-return]
        time.sleep(0.02)
        return []

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.scans: list[tuple[int, bytes, str]] = []
        self.hints: list[list[Hint]] = []

    async def request_scan(self, root_id: int, prefix: bytes, trigger: str) -> None:
        self.scans.append((root_id, prefix, trigger))

    async def on_hints(self, state: RootState, hints: list[Hint]) -> None:
        self.hints.append(hints)


def make(
    tmp_path: Path, clock: Clock, script: list[Any] | None = None, **root: Any
) -> tuple[Roots, Recorder, RootState]:
    rec = Recorder()
    notify = ScriptedNotify(script or [])
    roots = Roots(rec.request_scan, rec.on_hints, 3600.0, lambda: notify, clock)
    config = RootConfig("r", tmp_path / "root", **root)
    state = roots.add(1, config, first_import=False)
    return roots, rec, state


def test_root_online_needs_the_folder_and_its_marker(tmp_path: Path) -> None:
    config = RootConfig("r", tmp_path / "root", marker=".mounted")
    assert root_online(config)[0] is False
    (tmp_path / "root").mkdir()
    online, why = root_online(config)
    assert not online and ".mounted" in why
    (tmp_path / "root" / ".mounted").touch()
    assert root_online(config) == (True, "")


async def test_offline_root_is_skipped_then_reconciled_when_it_comes_back(tmp_path: Path) -> None:
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, watch="poll")
    await roots.tick()
    assert state.state == "offline" and "not a directory" in (state.watch_error or "")
    assert rec.scans == []
    (tmp_path / "root").mkdir()
    await roots.tick()
    assert rec.scans == [(1, b"", "online")]
    assert state.state == "polling" and state.watch_error is None


async def test_periodic_and_poll_reconciles_are_due_an_interval_after_the_last_walk(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, watch="poll", poll_interval=60.0)
    await roots.tick()
    assert rec.scans == []  # never walked yet: the start-up scan is not the scheduler's
    state.last_full_scan = clock.now
    clock.now += 59
    await roots.tick()
    assert rec.scans == []
    clock.now += 1
    await roots.tick()
    assert rec.scans == [(1, b"", "poll")]
    assert state.last_full_scan == clock.now  # not asked again until that one ends
    await roots.tick()
    assert len(rec.scans) == 1
    state.watch_error, state.watch_limit = None, False
    roots.by_id[1] = state = RootState(RootConfig("r", tmp_path / "root"), 1, state.raw_path)
    state.state, state.last_full_scan = "watching", clock.now
    state.stop_watch = threading.Event()  # a watcher is running: not started again
    clock.now += 3599
    await roots.tick()
    assert len(rec.scans) == 1
    clock.now += 1
    await roots.tick()
    assert rec.scans[-1] == (1, b"", "periodic")


async def test_a_scanning_root_gets_no_second_periodic_walk(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, watch="poll", poll_interval=1.0)
    state.last_full_scan, state.scanning = clock.now, 1
    clock.now += 10
    await roots.tick()
    assert rec.scans == []


async def test_watcher_failure_polls_reconciles_and_retries_with_doubling_back_off(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    rec = Recorder()
    made: list[ScriptedNotify] = []

    def failing() -> ScriptedNotify:
        made.append(ScriptedNotify([OSError(5, "Input/output error")]))
        return made[-1]

    roots = Roots(rec.request_scan, rec.on_hints, 3600.0, failing, clock)
    state = roots.add(1, RootConfig("r", tmp_path / "root"), first_import=False)

    async def failures(n: int) -> None:
        with anyio.fail_after(5):
            while len(rec.scans) < n or state.stop_watch is not None:
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()  # starts the watcher, which fails
        await failures(1)
        assert rec.scans == [(1, b"", "watcher-failure")]
        assert (
            state.state == "polling" and state.polling and "Input/output error" in (state.watch_error or "")
        )
        assert state.watch_settled.is_set()  # a start-up walk waiting for the watch goes on
        assert state.next_watch_try == clock.now + 2.0
        clock.now += 1.9
        await roots.tick()
        assert len(made) == 1  # not retried before its time
        clock.now += 0.1
        await roots.tick()
        await failures(2)
        assert len(made) == 2 and state.next_watch_try == clock.now + 4.0
        state.watch_failures = 40
        clock.now += 4
        await roots.tick()
        await failures(3)
        assert state.next_watch_try == clock.now + WATCH_BACKOFF_MAX_S
        roots.stop_all()


async def test_a_healthy_watcher_forwards_hints_and_says_watching(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, script=[[RawEvent(1, IN_CREATE, 0, b"new")]])
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        roots.start_watch(state)
        with anyio.fail_after(5):
            while not rec.hints:
                await anyio.sleep(0.01)
        assert rec.hints == [[PathHint(b"new", True)]]
        assert state.state == "watching" and state.watch_error is None
        roots.stop_all()
        assert state.stop_watch is None


async def test_first_import_is_watched_only_after_it_and_walked_again_behind_the_watch(
    tmp_path: Path,
) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    rec = Recorder()
    roots = Roots(rec.request_scan, rec.on_hints, 3600.0, lambda: ScriptedNotify([]), clock)
    state = roots.add(1, RootConfig("r", tmp_path / "root"), first_import=True)
    assert state.import_before_watch
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()
        assert state.stop_watch is None  # not while the first import reads the tree
        roots.watch_after_import(state, stopping=False)
        assert state.stop_watch is not None and not state.import_before_watch
        with anyio.fail_after(5):
            while not rec.scans:
                await anyio.sleep(0.01)
        assert rec.scans == [(1, b"", "after-import")]
        roots.stop_all()


async def test_a_queue_overflow_asks_for_a_reconcile_and_keeps_watching(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, script=[[RawEvent(-1, IN_Q_OVERFLOW, 0, b"")]])
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        roots.start_watch(state)
        with anyio.fail_after(5):
            while not rec.scans:
                await anyio.sleep(0.01)
        assert rec.scans == [(1, b"", "watch-overflow")]
        assert state.state == "watching" and state.watch_failures == 0 and state.stop_watch is not None
        roots.stop_all()


async def wait_until(predicate: Any) -> None:
    # Generous: a watch is placed by a thread of its own, and a loaded 2-core CI machine has
    # taken more than 5 s to schedule it.
    with anyio.fail_after(30):
        while not predicate():
            await anyio.sleep(0.01)


async def test_every_restart_of_a_watch_is_followed_by_a_reconcile(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    rec = Recorder()
    scripts: list[list[Any]] = [[], [OSError(5, "Input/output error")], []]

    def factory() -> ScriptedNotify:
        return ScriptedNotify(scripts.pop(0))

    roots = Roots(rec.request_scan, rec.on_hints, 3600.0, factory, clock)
    state = roots.add(1, RootConfig("r", tmp_path / "root"), first_import=False)
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()  # the first watch: the start-up walk (queued by the caller) follows it
        await wait_until(lambda: state.state == "watching")
        assert rec.scans == []
        roots.stop_watch(state)
        await wait_until(lambda: state.stop_watch is None)
        await roots.tick()  # watched again (a re-arm): nothing watched meanwhile, so walk it
        await wait_until(lambda: len(rec.scans) == 2)
        assert rec.scans[0] == (1, b"", "watch-restart")
        # That watcher fails: a walk at once, and another when the next one is in place.
        assert rec.scans[1] == (1, b"", "watcher-failure")
        clock.now += 2
        await roots.tick()
        await wait_until(lambda: len(rec.scans) == 3)
        assert rec.scans[2] == (1, b"", "watch-restart") and state.state == "watching"
        roots.stop_all()


async def test_a_watch_healthy_for_a_while_resets_the_back_off(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, _, state = make(tmp_path, clock)
    state.watch_failures = 6  # 64 s back-off
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()
        await wait_until(lambda: state.watch_up_since)
        clock.now += WATCH_HEALTHY_S - 1
        await roots.tick()
        assert state.watch_failures == 6
        clock.now += 1
        await roots.tick()
        assert state.watch_failures == 0
        roots.stop_all()


async def test_a_swapped_root_folder_is_watched_anew_and_reconciled(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock)
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()
        await wait_until(lambda: state.state == "watching")
        first = state.stop_watch
        root.rename(tmp_path / "root.old")
        (tmp_path / "root.new").mkdir()
        (tmp_path / "root.new").rename(root)
        await roots.tick()
        assert rec.scans == [(1, b"", "root-changed")]
        assert state.stop_watch is not None and state.stop_watch is not first and first is not None
        assert first.is_set()  # the old folder's watch is stopped
        assert state.identity == (root.stat().st_dev, root.stat().st_ino)
        await wait_until(lambda: state.state == "watching")
        assert rec.scans == [(1, b"", "root-changed")]  # that walk waits for the new watch
        roots.stop_all()


async def test_a_mount_point_left_bare_is_offline_until_mounted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    mounted = [True]
    monkeypatch.setattr("importd.pipeline.roots.is_mount_point", lambda path: mounted[0])
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, watch="poll")
    await roots.tick()
    assert state.mount_point and state.state == "polling"
    root.rename(tmp_path / "share")  # unmounted: the bare folder under it is another one
    root.mkdir()
    mounted[0] = False
    await roots.tick()
    assert state.state == "offline" and "no longer a mount point" in (state.watch_error or "")
    assert rec.scans == []
    root.rmdir()
    (tmp_path / "share").rename(root)  # mounted again (a new mount is a new folder, too)
    mounted[0] = True
    await roots.tick()
    assert state.state == "polling" and state.watch_error is None
    assert rec.scans == [(1, b"", "online")]


async def test_a_root_folder_that_goes_away_is_no_watcher_failure(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock)
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        await roots.tick()
        await wait_until(lambda: state.state == "watching")
        root.rmdir()
        await roots._watcher_down(state, WatcherDown("the root folder was unmounted", root=True))
        assert state.state == "offline" and state.watch_failures == 0 and rec.scans == []
        roots.stop_all()


async def test_a_hint_on_a_folder_the_walk_could_not_read_walks_it_again(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    clock = Clock()
    roots, rec, state = make(tmp_path, clock, script=[[RawEvent(1, IN_ATTRIB | IN_ISDIR, 0, b"locked")]])
    state.walk_errors = [WalkError(b"locked", "permission denied")]
    state.walk_follows_watch = True
    async with anyio.create_task_group() as tg:
        roots.bind(tg)
        roots.start_watch(state)
        await wait_until(lambda: rec.hints)
        # Unwatched (it could not be read): the watcher watches it and the wiring walks it.
        assert rec.hints == [[PathHint(b"locked", True)]]
        await roots._rescan_readable(state, [PathHint(b"locked", False)])  # a watched one
        assert rec.scans == [(1, b"locked", "watch")]
        roots.stop_all()


def test_a_hint_past_path_max_is_an_unreadable_path_not_a_disappearance(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    roots, _, state = make(tmp_path, Clock())
    deep = b"d" * (PATH_MAX - len(state.raw_path))
    hints: list[Hint] = [PathHint(b"ok", False), PathHint(deep, False), RenameHint(b"a", deep, False)]
    assert roots._reachable(state, hints) == [PathHint(b"ok", False), PathHint(b"a", False)]
    assert state.walk_errors == [WalkError(deep, TOO_LONG)]  # once, though hinted twice
    assert roots._reachable(state, [PathHint(b"ok", True)]) == [PathHint(b"ok", True)]
