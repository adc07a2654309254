import errno
import threading
from pathlib import Path
from typing import Any

from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.pipeline.watch import PathHint, RootWatcher, WatcherDown, WatcherUp, interpret

IGNORE = IgnoreRules(DEFAULT_IGNORES)


class ScriptedNotify:
    """A fake watcher that returns scripted results, then 'stop'."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.closed = False

    def watch(self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: Any) -> Any:
        if not self.script:
            return "stop"
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def run(script: list[Any], factory_error: BaseException | None = None) -> tuple[list[Any], ScriptedNotify]:
    events: list[Any] = []
    fake = ScriptedNotify(script)

    def factory(path: str) -> ScriptedNotify:
        if factory_error is not None:
            raise factory_error
        return fake

    RootWatcher(Path("/srv/root"), IGNORE, events.append, factory=factory).run(threading.Event())
    return events, fake


def test_interpret_makes_relative_hints_and_drops_ignored() -> None:
    hints = interpret(
        {
            (1, "/srv/root/a/new"),
            (3, "/srv/root/a/old"),
            (2, "/srv/root/x.part"),
            (1, "/elsewhere/z"),
            (2, "/srv/root"),
        },
        Path("/srv/root"),
        IGNORE,
    )
    assert hints == [PathHint(b"a/new", True), PathHint(b"a/old", False)]


def test_batches_are_forwarded_and_timeouts_skipped() -> None:
    events, fake = run(["timeout", {(1, "/srv/root/f")}, {(2, "/srv/root/f")}])
    assert events == [WatcherUp(), [PathHint(b"f", True)], [PathHint(b"f", False)]]
    assert fake.closed


def test_internal_error_reports_watcher_down() -> None:
    from watchfiles._rust_notify import WatchfilesRustInternalError

    events, fake = run(
        [{(1, "/srv/root/f")}, WatchfilesRustInternalError('Unable to decode path "/srv/root/\\xFF"')]
    )
    assert isinstance(events[-1], WatcherDown) and not events[-1].limit
    assert "Unable to decode" in events[-1].reason
    assert fake.closed


def test_watch_limit_falls_back_with_the_sysctl_hint() -> None:
    events, _ = run([], factory_error=OSError(errno.ENOSPC, "OS file watch limit reached"))
    assert len(events) == 1 and isinstance(events[0], WatcherDown) and events[0].limit
    assert "fs.inotify.max_user_watches" in events[0].reason and "sysctl" in events[0].reason
