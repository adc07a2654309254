"""watch: what watchfiles cannot do (real watchfiles, kept because it says why importd reads
inotify itself); the pairing of renames and the watch table with scripted inotify records; the
watcher's lifecycle with a scripted inotify; and the real kernel on names that are not UTF-8."""

from __future__ import annotations

import errno
import glob
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.pipeline.watch import (
    FOLDER_MASK,
    IN_ACCESS,
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_EXCL_UNLINK,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_OPEN,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    PAIR_WINDOW_S,
    EventInterpreter,
    Hint,
    Overflow,
    PathHint,
    RawEvent,
    RenameHint,
    RootWatcher,
    WatcherDown,
    WatcherUp,
    WatchEvent,
    parse_events,
)

IGNORE = IgnoreRules(DEFAULT_IGNORES)
LATIN1 = "café.jpg".encode("latin-1")
CP1252 = "€uro – draft.txt".encode("cp1252")
SHIFT_JIS = "写真.png".encode("shift_jis")


def later(seconds: float, fn: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(seconds, fn)
    timer.start()
    return timer


# ----- what watchfiles cannot do ---------------------------------------------------------------


def test_watchfiles_cannot_watch_a_tree_with_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """The reason importd reads inotify itself. With watchfiles: a mere read of a file whose name
    is Latin-1 (importd's own hashing does that) fails the whole batch with `Unable to decode
    path`, the other events of that batch (here a new file) are lost, and it fails again on the
    next call; a rename comes as an unpaired delete and add; and the kernel watch includes
    IN_OPEN, which is why importd's own reads wake it."""
    from watchfiles._rust_notify import RustNotify, WatchfilesRustInternalError

    root = os.fsencode(str(tmp_path))
    with open(root + b"/" + LATIN1, "wb") as fh:
        fh.write(b"latin-1 name")
    with open(root + b"/plain.txt", "wb") as fh:
        fh.write(b"x")
    notify = RustNotify([str(tmp_path)], False, False, 300, True, False)
    stop = threading.Event()
    try:
        masks = [
            int(line.split("mask:")[1].split()[0], 16)
            for info in glob.glob("/proc/self/fdinfo/*")
            for line in _read(info).splitlines()
            if line.startswith("inotify wd:")
        ]
        assert masks and all(m & IN_OPEN for m in masks)  # our reads would wake it

        later(0.2, lambda: os.rename(root + b"/plain.txt", root + b"/renamed.txt"))
        changes = notify.watch(100, 50, 2000, stop)
        assert changes == {(3, str(tmp_path / "plain.txt")), (1, str(tmp_path / "renamed.txt"))}

        def read_and_create() -> None:
            with open(root + b"/" + LATIN1, "rb") as fh:
                fh.read()
            with open(root + b"/lost.txt", "wb") as fh:
                fh.write(b"never reported")

        later(0.2, read_and_create)
        with pytest.raises(WatchfilesRustInternalError, match="Unable to decode path"):
            notify.watch(100, 50, 2000, stop)
        with pytest.raises(WatchfilesRustInternalError, match="Unable to decode path"):
            notify.watch(100, 50, 500, stop)
    finally:
        notify.close()


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


# ----- the kernel's records ----------------------------------------------------------------------


def record(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_records_are_parsed_with_names_as_raw_bytes() -> None:
    data = (
        record(1, IN_CREATE, 0, LATIN1)
        + record(2, IN_MOVED_FROM, 7, b"line\nbreak")
        + record(-1, IN_Q_OVERFLOW, 0, b"")
        + record(3, IN_CLOSE_WRITE, 0, b"x" * 16)
    )
    assert parse_events(data) == [
        RawEvent(1, IN_CREATE, 0, LATIN1),
        RawEvent(2, IN_MOVED_FROM, 7, b"line\nbreak"),
        RawEvent(-1, IN_Q_OVERFLOW, 0, b""),
        RawEvent(3, IN_CLOSE_WRITE, 0, b"x" * 16),
    ]


def test_the_mask_hears_writes_renames_and_the_root_itself_but_not_reads() -> None:
    for bit in (
        IN_CREATE,
        IN_CLOSE_WRITE,
        IN_MODIFY,
        IN_ATTRIB,
        IN_DELETE,
        IN_DELETE_SELF,
        IN_MOVED_FROM,
        IN_MOVED_TO,
        IN_MOVE_SELF,
        IN_ONLYDIR,
        IN_DONT_FOLLOW,
        IN_EXCL_UNLINK,
    ):
        assert FOLDER_MASK & bit
    assert not FOLDER_MASK & (IN_OPEN | IN_ACCESS)


# ----- pairing and the watch table (pure) ----------------------------------------------------------


def table() -> EventInterpreter:
    t = EventInterpreter(IGNORE)
    t.watched(1, b"")
    t.watched(2, b"a")
    t.watched(3, b"a/b")
    return t


def test_both_halves_of_a_rename_in_one_batch_make_one_rename_hint() -> None:
    t = table()
    out = t.interpret(
        [RawEvent(1, IN_MOVED_FROM, 9, LATIN1), RawEvent(2, IN_MOVED_TO, 9, SHIFT_JIS)], now=10.0
    )
    assert out.hints == [RenameHint(LATIN1, b"a/" + SHIFT_JIS, False)]
    assert not t.pairing


def test_a_rename_split_across_two_reads_is_paired_within_the_window() -> None:
    t = table()
    assert t.interpret([RawEvent(1, IN_MOVED_FROM, 9, b"old")], now=10.0).hints == []
    assert t.pairing and 0 < t.next_timeout_ms(10.05, 1000) <= PAIR_WINDOW_S * 1000
    out = t.interpret([RawEvent(1, IN_MOVED_TO, 9, b"new")], now=10.1)
    assert out.hints == [RenameHint(b"old", b"new", False)]


def test_unpaired_halves_are_a_disappearance_and_an_arrival() -> None:
    t = table()
    t.interpret([RawEvent(1, IN_MOVED_FROM, 9, b"left")], now=10.0)
    out = t.interpret([RawEvent(1, IN_MOVED_TO, 4, b"came")], now=10.0 + 2 * PAIR_WINDOW_S)
    assert out.hints == [PathHint(b"came", True), PathHint(b"left", False)]
    assert not t.pairing


def test_a_folder_moved_out_of_the_root_loses_its_watches() -> None:
    t = table()
    t.interpret([RawEvent(1, IN_MOVED_FROM | IN_ISDIR, 5, b"a")], now=10.0)
    out = t.interpret([], now=11.0)
    assert out.hints == [PathHint(b"a", False)] and out.left_folders == [b"a"]
    assert sorted(t.wds_under(b"a")) == [2, 3]


def test_a_folder_rename_moves_the_watches_below_it() -> None:
    t = table()
    out = t.interpret(
        [
            RawEvent(1, IN_MOVED_FROM | IN_ISDIR, 5, b"a"),
            RawEvent(1, IN_MOVED_TO | IN_ISDIR, 5, b"A"),
            RawEvent(3, IN_CLOSE_WRITE, 0, b"f"),
        ],
        now=10.0,
    )
    assert out.hints == [RenameHint(b"a", b"A", True), PathHint(b"A/b/f", False)]
    assert t.folders == {1: b"", 2: b"A", 3: b"A/b"}
    assert out.new_folders == []  # their watches are already there


def test_a_folder_moved_in_from_outside_is_watched_and_rescanned() -> None:
    out = table().interpret([RawEvent(1, IN_MOVED_TO | IN_ISDIR, 5, b"in")], now=1.0)
    assert out.hints == [PathHint(b"in", True)] and out.new_folders == [b"in"]


def test_a_batch_gives_one_hint_per_path_and_drops_ignored_names() -> None:
    out = table().interpret(
        [
            RawEvent(2, IN_CREATE, 0, b"f"),
            RawEvent(2, IN_MODIFY, 0, b"f"),
            RawEvent(2, IN_CLOSE_WRITE, 0, b"f"),
            RawEvent(1, IN_CREATE, 0, b"x.part"),
            RawEvent(1, IN_CREATE | IN_ISDIR, 0, b"@eaDir"),
            RawEvent(1, IN_CREATE | IN_ISDIR, 0, b"new"),
        ],
        now=1.0,
    )
    assert out.hints == [PathHint(b"a/f", True), PathHint(b"new", True)]
    assert out.new_folders == [b"new"]


def test_a_rename_explains_an_earlier_hint_of_its_old_path() -> None:
    out = table().interpret(
        [
            RawEvent(1, IN_CLOSE_WRITE, 0, b"draft"),
            RawEvent(1, IN_MOVED_FROM, 3, b"draft"),
            RawEvent(1, IN_MOVED_TO, 3, b"final"),
            RawEvent(1, IN_ATTRIB, 0, b"final"),
        ],
        now=1.0,
    )
    assert out.hints == [RenameHint(b"draft", b"final", False), PathHint(b"final", False)]


def test_a_rename_into_an_ignored_name_is_only_a_disappearance() -> None:
    out = table().interpret(
        [RawEvent(1, IN_MOVED_FROM, 3, b"photo.jpg"), RawEvent(1, IN_MOVED_TO, 3, b"photo.jpg.part")],
        now=1.0,
    )
    assert out.hints == [PathHint(b"photo.jpg", False)]


def test_overflow_and_the_root_going_away() -> None:
    t = table()
    assert t.interpret([RawEvent(-1, IN_Q_OVERFLOW, 0, b"")], now=1.0).overflow
    assert (
        t.interpret([RawEvent(3, IN_DELETE_SELF, 0, b""), RawEvent(3, IN_IGNORED, 0, b"")], now=1.0).down
        is None
    )
    assert 3 not in t.folders
    out = t.interpret([RawEvent(1, IN_MOVE_SELF, 0, b"")], now=1.0)
    assert "root" in (out.down or "") and out.down_root
    out = table().interpret([RawEvent(1, IN_UNMOUNT, 0, b""), RawEvent(1, IN_IGNORED, 0, b"")], now=1.0)
    assert "unmounted" in (out.down or "") and out.down_root


def test_a_folder_without_a_watch_whose_permissions_change_is_watched_and_walked() -> None:
    t = table()
    # `a` is watched: a chmod of it is a plain hint.
    assert t.interpret([RawEvent(1, IN_ATTRIB | IN_ISDIR, 0, b"a")], now=1.0).hints == [PathHint(b"a", False)]
    # `locked` could not be watched (unreadable then): a chmod may have made it readable.
    out = t.interpret([RawEvent(1, IN_ATTRIB | IN_ISDIR, 0, b"locked")], now=1.0)
    assert out.hints == [PathHint(b"locked", True)] and out.new_folders == [b"locked"]
    t.interpret(
        [RawEvent(1, IN_MOVED_FROM | IN_ISDIR, 4, b"a"), RawEvent(1, IN_MOVED_TO | IN_ISDIR, 4, b"z")], 1.0
    )
    assert t.is_watched(b"z/b") and not t.is_watched(b"a/b")


# ----- the watcher's lifecycle, with a scripted inotify ---------------------------------------------


Script = list[RawEvent] | BaseException | Callable[[], list[RawEvent]]


class ScriptedInotify:
    """Hands out watch descriptors, then the scripted batches (an exception is raised, a function
    is called), then stops the watcher; `limit` makes add_watch fail with ENOSPC after that many watches."""

    def __init__(self, script: list[Script], limit: int | None = None) -> None:
        self.script = list(script)
        self.limit = limit
        self.watches: dict[bytes, tuple[int, int]] = {}
        self.removed: list[int] = []
        self.closed = False
        self.stop: threading.Event | None = None

    def add_watch(self, path: bytes, mask: int) -> int:
        if path in self.watches:
            return self.watches[path][0]
        if not os.path.isdir(path):
            raise OSError(errno.ENOENT, "No such file or directory")
        if self.limit is not None and len(self.watches) >= self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.watches[path] = (len(self.watches) + 1, mask)
        return len(self.watches)

    def rm_watch(self, wd: int) -> None:
        self.removed.append(wd)

    def read(self, timeout_ms: int) -> list[RawEvent]:
        if not self.script:
            if self.stop is not None:
                self.stop.set()
            return []
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item() if callable(item) else item

    def close(self) -> None:
        self.closed = True

    def wd(self, path: Path) -> int:
        return self.watches[os.fsencode(str(path))][0]


def run(root: Path, fake: ScriptedInotify, clock: Callable[[], float] = time.monotonic) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    stop = threading.Event()
    fake.stop = stop
    RootWatcher(root, IGNORE, events.append, factory=lambda: fake, clock=clock).run(stop)
    assert fake.closed
    return events


def test_every_folder_is_watched_with_the_mask_whatever_its_name(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path))
    for name in (LATIN1, CP1252, SHIFT_JIS, b"line\nbreak", b"@eaDir"):
        os.makedirs(raw + b"/deep/" + name)
    os.symlink(raw + b"/deep", raw + b"/link")
    fake = ScriptedInotify([])
    assert run(tmp_path, fake) == [WatcherUp()]
    watched = {p[len(raw) :] for p in fake.watches}
    assert watched == {b"", b"/deep"} | {b"/deep/" + n for n in (LATIN1, CP1252, SHIFT_JIS, b"line\nbreak")}
    assert {mask for _, mask in fake.watches.values()} == {FOLDER_MASK}


def test_a_new_folder_is_watched_before_its_hint_goes_out(tmp_path: Path) -> None:
    fake = ScriptedInotify([[RawEvent(1, IN_CREATE | IN_ISDIR, 0, SHIFT_JIS)]])
    os.makedirs(os.fsencode(str(tmp_path)) + b"/" + SHIFT_JIS + b"/inner")
    events = run(tmp_path, fake)
    assert events == [WatcherUp(), [PathHint(SHIFT_JIS, True)]]
    assert len(fake.watches) == 3


def test_overflow_places_the_watches_again_and_asks_for_a_reconcile(tmp_path: Path) -> None:
    def made_meanwhile() -> list[RawEvent]:
        (tmp_path / "made-meanwhile").mkdir()
        return [RawEvent(-1, IN_Q_OVERFLOW, 0, b"")]

    fake = ScriptedInotify([made_meanwhile])
    assert run(tmp_path, fake) == [WatcherUp(), Overflow()]
    assert os.fsencode(str(tmp_path / "made-meanwhile")) in fake.watches


def test_a_folder_moved_out_is_unwatched(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    fake = ScriptedInotify([[RawEvent(1, IN_MOVED_FROM | IN_ISDIR, 4, b"a")], []])
    now = [10.0]

    def clock() -> float:
        now[0] += PAIR_WINDOW_S
        return now[0]

    events = run(tmp_path, fake, clock)
    assert events[-1] == [PathHint(b"a", False)]
    assert sorted(fake.removed) == sorted([fake.wd(tmp_path / "a"), fake.wd(tmp_path / "a" / "b")])


def test_the_watch_limit_falls_back_with_the_sysctl_hint(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"d{i}").mkdir()
    events = run(tmp_path, ScriptedInotify([], limit=2))
    assert len(events) == 1 and isinstance(events[0], WatcherDown) and events[0].limit
    assert "fs.inotify.max_user_watches" in events[0].reason and "sysctl" in events[0].reason


def test_a_failed_read_or_a_vanished_root_reports_the_watcher_down(tmp_path: Path) -> None:
    events = run(tmp_path, ScriptedInotify([OSError(errno.EIO, "Input/output error")]))
    assert isinstance(events[-1], WatcherDown) and "Input/output error" in events[-1].reason
    events = run(tmp_path, ScriptedInotify([[RawEvent(1, IN_IGNORED, 0, b"")]]))
    assert isinstance(events[-1], WatcherDown) and not events[-1].limit
    events = run(tmp_path / "absent", ScriptedInotify([]))
    assert isinstance(events[-1], WatcherDown) and "cannot watch" in events[-1].reason


# ----- the real kernel --------------------------------------------------------------------------


def test_the_kernel_watcher_takes_any_name_and_ignores_our_reads(tmp_path: Path) -> None:
    raw = os.fsencode(str(tmp_path))
    os.mkdir(raw + b"/" + CP1252[:4])
    for name in (LATIN1, SHIFT_JIS):
        with open(raw + b"/" + name, "wb") as fh:
            fh.write(b"odd name")
    batches: list[list[Hint]] = []
    other: list[WatchEvent] = []

    def emit(event: WatchEvent) -> None:
        (batches if isinstance(event, list) else other).append(event)  # type: ignore[arg-type]

    watcher = RootWatcher(tmp_path, IGNORE, emit)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        assert watcher.ready.wait(5)
        for name in (LATIN1, SHIFT_JIS):  # what hashing does: nothing must come of it
            with open(raw + b"/" + name, "rb") as fh:
                fh.read()
        time.sleep(0.3)
        assert batches == []
        os.rename(raw + b"/" + LATIN1, raw + b"/" + CP1252[:4] + b"/" + CP1252)
        with open(raw + b"/new\n" + SHIFT_JIS, "wb") as fh:
            fh.write(b"x")
        os.unlink(raw + b"/" + SHIFT_JIS)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(len(b) for b in batches) < 3:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
    hints = [h for b in batches for h in b]
    assert other == [WatcherUp()]
    assert RenameHint(LATIN1, CP1252[:4] + b"/" + CP1252, False) in hints
    assert PathHint(b"new\n" + SHIFT_JIS, True) in hints
    assert PathHint(SHIFT_JIS, False) in hints
