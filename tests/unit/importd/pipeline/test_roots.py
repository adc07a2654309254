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
from importd.pipeline.roots import WATCH_BACKOFF_MAX_S, Roots, RootState, root_online
from importd.pipeline.watch import IN_CREATE, IN_Q_OVERFLOW, Hint, PathHint, RawEvent

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
