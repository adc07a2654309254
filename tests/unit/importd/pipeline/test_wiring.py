"""wiring: the `Pipeline` itself, in this process, handing files from stage to stage over a real
SQLite catalog, real files and the real writer. Watchers are scripted (the test feeds their
events; no inotify) and the clock is frozen and moved by the test: it decides which files are
old (the walk's fast lane) and when a young one has been still long enough (the settle tracker)."""

from __future__ import annotations

import gc
import os
import queue
import shutil
import sqlite3
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import blake3
import pytest

from importctl.protocol import TERMINAL_STATES
from importd.catalog.engine import create_engine, migrate
from importd.catalog.writer import BatchResult
from importd.config import Config, MediaConfig, RootConfig
from importd.items import FileStat, HashOutcome, SettledFile
from importd.pipeline.hasher import hash_walked as hash_walked_for_real
from importd.pipeline.reconcile import WalkedFile
from importd.pipeline.scans import Scan
from importd.pipeline.settle import SettleTracker
from importd.pipeline.watch import IN_CREATE, IN_DELETE, IN_ISDIR, IN_MOVED_FROM, IN_MOVED_TO, RawEvent
from importd.pipeline.wiring import Key, Pipeline

pytestmark = pytest.mark.anyio

SETTLE_S = 0.2
CHANGE_ADDED, CHANGE_DELETED = 1, 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _collect_streams() -> Iterator[None]:
    """The pipeline leaves its memory streams to the process's exit (as the daemon does);
    collected here rather than in a later test, where they would warn."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


class Clock:
    """Frozen until the test moves it. `ahead()`: every file on disk is old (settled by its
    ctime); `behind()`: every file is young until the clock has moved past its settle time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def ahead(self) -> None:
        self.now = time.time() + 60

    def behind(self) -> None:
        self.now = time.time() - 60

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedNotify:
    """An inotify whose events the test feeds, as the kernel would write them: each change
    becomes a record of the watched folder that holds the path (IN_CREATE for an added path, as
    a link, a symlink or a new file give; IN_DELETE for a removed one). Between batches a read
    waits a little and returns nothing."""

    def __init__(self) -> None:
        self.wds: dict[bytes, int] = {}  # watched folder -> watch descriptor
        self.batches: queue.Queue[list[RawEvent]] = queue.Queue()
        self.closed = threading.Event()

    @property
    def path(self) -> str:
        """The root folder (the first one watched)."""
        return os.fsdecode(next(iter(self.wds))) if self.wds else ""

    def add_watch(self, path: bytes, mask: int) -> int:
        return self.wds.setdefault(path, len(self.wds) + 1)

    def rm_watch(self, wd: int) -> None:
        self.wds = {p: w for p, w in self.wds.items() if w != wd}

    def feed(self, *changes: tuple[int, Path]) -> None:
        events = []
        for change, path in changes:
            raw = os.fsencode(path)
            folder, name = raw.rsplit(b"/", 1)
            if change == CHANGE_ADDED:
                mask = IN_CREATE | (IN_ISDIR if path.is_dir() and not path.is_symlink() else 0)
            else:
                mask = IN_DELETE
            events.append(RawEvent(self.wds[folder], mask, 0, name))
        self.batches.put(events)

    def feed_rename(self, old: Path, new: Path, cookie: int = 7) -> None:
        """A rename inside the root, as the kernel pairs it (IN_MOVED_FROM/IN_MOVED_TO, one cookie)."""
        (old_folder, old_name), (new_folder, new_name) = (os.fsencode(p).rsplit(b"/", 1) for p in (old, new))
        self.batches.put(
            [
                RawEvent(self.wds[old_folder], IN_MOVED_FROM, cookie, old_name),
                RawEvent(self.wds[new_folder], IN_MOVED_TO, cookie, new_name),
            ]
        )

    def read(self, timeout_ms: int) -> list[RawEvent]:
        try:
            return self.batches.get(timeout=0.02)
        except queue.Empty:
            return []

    def close(self) -> None:
        self.closed.set()


class Watchers:
    """The notify factory: a scripted inotify per root watcher, the latest one by root folder."""

    def __init__(self) -> None:
        self.made: list[ScriptedNotify] = []

    def __call__(self) -> ScriptedNotify:
        self.made.append(ScriptedNotify())
        return self.made[-1]

    def of(self, folder: Path) -> ScriptedNotify | None:
        return next((n for n in reversed(self.made) if n.path == str(folder)), None)


class RecordingTracker(SettleTracker[Key]):
    """The real settle tracker, recording every observation (key, size) it is given."""

    def __init__(self, settle_seconds: float) -> None:
        super().__init__(settle_seconds)
        self.observed: list[tuple[Key, int]] = []

    def observe(self, key: Key, stat: FileStat, now: float) -> bool:
        self.observed.append((key, stat.size))
        return super().observe(key, stat, now)


@dataclass
class Running:
    pipeline: Pipeline
    clock: Clock
    watchers: Watchers
    db: Path
    tracker: RecordingTracker
    committed: list[BatchResult] = field(default_factory=list)

    def root_id(self, name: str) -> int:
        return next(rid for rid, st in self.pipeline.roots.by_id.items() if st.name == name)

    def rows(self) -> dict[bytes, sqlite3.Row]:
        """Every file row by relpath (the last one per path)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return {bytes(r["relpath"]): r for r in conn.execute("SELECT * FROM files ORDER BY id")}
        finally:
            conn.close()

    def row_count(self) -> int:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
        finally:
            conn.close()

    def changes(self) -> list[tuple[bytes, str]]:
        return [(c.relpath, c.kind) for result in self.committed for c in result.changes]

    def idle(self) -> bool:
        p = self.pipeline
        return (
            p.queue_sizes() == {"settling": 0, "hashing": 0}
            and p.writer.pending == 0
            and all(s.state in TERMINAL_STATES for s in p.scans.by_id.values())
            and all(st.state not in ("starting", "scanning") for st in p.roots.by_id.values())
        )

    async def scan(self, name: str, prefix: bytes = b"") -> Scan:
        scan = await self.pipeline.request_scan(self.root_id(name), prefix, "manual")
        await until(lambda: scan.state in TERMINAL_STATES, f"scan of {name} ends")
        await self.pipeline.writer.flush()
        return scan


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Polls `predicate` on the event loop (the pipeline's tasks run in between)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@asynccontextmanager
async def running(
    tmp_path: Path, roots: Sequence[RootConfig], clock: Clock | None = None, **options: Any
) -> AsyncIterator[Running]:
    """The pipeline and its writer in a task group, as the service runs them; returns once every
    start-up scan has ended and the pipeline is idle. Stopped as SIGTERM stops it."""
    db = tmp_path / "state" / "catalog.db"
    config = Config(
        source=None,
        roots=tuple(roots),
        catalog_url=f"sqlite:///{db}",
        socket_path=tmp_path / "run" / "control.sock",
        state_dir=tmp_path / "state",
        settle_seconds=options.pop("settle_seconds", SETTLE_S),
        hash_workers=2,
        media=MediaConfig(enabled=False),
        **options,
    )
    engine = create_engine(config.catalog_url)
    await migrate(engine)
    clock = clock or Clock()
    watchers = Watchers()
    pipeline = Pipeline(config, engine, notify_factory=watchers, clock=clock)
    tracker = RecordingTracker(config.settle_seconds)
    pipeline.tracker = tracker
    h = Running(pipeline, clock, watchers, db, tracker)
    pipeline.writer.subscribe(h.committed.append)
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(pipeline.writer.run)
            try:
                async with anyio.create_task_group() as tg:
                    await pipeline.start(tg)
                    try:
                        await until(h.idle, "start-up scans end")
                        # A root's first import is watched once read, then walked again behind it.
                        watched = sum(r.watch == "inotify" for r in roots)
                        await until(
                            lambda: (
                                watched
                                == sum(s.trigger == "after-import" for s in pipeline.scans.by_id.values())
                            ),
                            "the walks behind the watches are asked for",
                        )
                        await until(h.idle, "start-up scans end")
                        yield h
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                # Also when the test failed: the watchers' threads end only when told to.
                await pipeline.shutdown()
                pipeline.writer.close()
    finally:
        await engine.dispose()


def ctime(path: Path) -> float:
    return path.stat().st_ctime_ns / 1e9


def tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


OLD_TREE = {
    "a.txt": b"alpha",
    "empty": b"",
    "sub/b.bin": os.urandom(300_000),  # over the small-file reader's size: hashed whole
    "sub/deeper/c.mkv": os.urandom(5000),
}


async def test_a_start_up_walk_registers_old_files_through_the_fast_lane(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, OLD_TREE)
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        rows = h.rows()
        assert {rel.encode(): b3(data) for rel, data in OLD_TREE.items()} == {
            rel: row["blake3"] for rel, row in rows.items()
        }
        assert all(row["status"] == "present" and row["hashed_at"] is not None for row in rows.values())
        assert h.pipeline.scans.counters.hashed_files == len(OLD_TREE)
        assert h.tracker.observed == []  # none of them waited in the settle tracker
        (startup,) = h.pipeline.scans.by_id.values()
        assert (startup.trigger, startup.state) == ("startup", "completed")
        assert startup.files_seen == startup.changed == startup.files_registered == len(OLD_TREE)
        assert sorted(h.changes()) == sorted((rel.encode(), "new") for rel in OLD_TREE)
        assert h.pipeline.queue_sizes() == {"settling": 0, "hashing": 0}


async def test_a_young_file_is_registered_once_it_has_settled(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        rid = h.root_id("r")
        notify = h.watchers.of(root)
        assert notify is not None
        clock.behind()  # whatever is written now stays young until the clock moves
        (root / "new.mkv").write_bytes(b"first part")
        notify.feed((CHANGE_ADDED, root / "new.mkv"))
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 1, "the file waits in the tracker")
        # Still being written: the tracker sees the new size and starts its wait again.
        with (root / "new.mkv").open("ab") as f:
            f.write(b", and the rest")
        clock.advance(1.0)
        await until(lambda: ((rid, b"new.mkv"), 24) in h.tracker.observed, "the tracker sees the new size")
        assert h.pipeline.queue_sizes()["settling"] == 1 and h.rows() == {}
        clock.advance(1.0)
        await until(lambda: b"new.mkv" in h.rows(), "registered once settled")
        await until(h.idle, "idle")
        row = h.rows()[b"new.mkv"]
        assert (row["blake3"], row["size"]) == (b3(b"first part, and the rest"), 24)
        assert h.changes() == [(b"new.mkv", "new")] and h.pipeline.scans.counters.hashed_files == 1


async def test_a_rename_seen_by_a_scan_keeps_its_row_and_is_not_hashed_again(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a.txt": b"alpha", "keep.txt": b"kept"})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        before = h.rows()[b"a.txt"]
        (root / "moved").mkdir()
        (root / "a.txt").rename(root / "moved" / "b.txt")
        clock.ahead()  # the rename set the file's ctime: old again
        scan = await h.scan("r")
        assert scan.state == "completed"
        rows = h.rows()
        assert set(rows) == {b"keep.txt", b"moved/b.txt"} and h.row_count() == 2
        after = rows[b"moved/b.txt"]
        assert (after["id"], after["blake3"], after["status"]) == (before["id"], b3(b"alpha"), "present")
        assert h.pipeline.scans.counters.hashed_files == 2  # the start-up walk's, no more
        assert h.pipeline.scans.counters.moved == 1
        assert (b"moved/b.txt", "moved") in h.changes()


async def test_a_rename_seen_by_the_watcher_keeps_its_row_and_is_not_hashed_again(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a.txt": b"alpha"})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        before = h.rows()[b"a.txt"]
        (root / "a.txt").rename(root / "b.txt")
        clock.ahead()
        notify.feed((CHANGE_DELETED, root / "a.txt"), (CHANGE_ADDED, root / "b.txt"))
        await until(lambda: b"b.txt" in h.rows() and h.idle(), "the new path is registered")
        after = h.rows()[b"b.txt"]
        assert (after["id"], after["blake3"], after["status"]) == (before["id"], b3(b"alpha"), "present")
        assert h.row_count() == 1
        assert h.pipeline.scans.counters.hashed_files == 1


async def test_a_scan_waiting_for_a_settling_file_that_is_renamed_still_ends(tmp_path: Path) -> None:
    """A catalogued file renamed (its ctime is new: young again) is walked by a scan, which waits
    for it to settle; then it is renamed once more and follows its row without settling: the
    scan stops waiting for the path it left (it stayed `scanning` for good: crash trials, seed
    6069)."""
    root = tmp_path / "r"
    tree(root, {"a.bin": b"catalogued"})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        before = h.rows()[b"a.bin"]
        clock.behind()  # a rename sets the ctime: young until the clock moves
        (root / "a.bin").rename(root / "b.bin")
        scan = await h.pipeline.request_scan(h.root_id("r"), b"", "manual")
        await until(lambda: scan.state == "importing" and scan.pending, "the scan waits for the young file")
        (root / "b.bin").rename(root / "c.bin")
        notify.feed_rename(root / "b.bin", root / "c.bin")
        await until(lambda: scan.state in TERMINAL_STATES, "the scan ends")
        clock.ahead()
        await until(lambda: b"c.bin" in h.rows() and h.idle(), "the row follows its file")
        assert scan.state == "completed"
        assert h.rows()[b"c.bin"]["id"] == before["id"] and h.row_count() == 1


async def test_a_hard_link_takes_the_digest_without_hashing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a.bin": os.urandom(4000)})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        os.link(root / "a.bin", root / "link.bin")
        clock.ahead()
        await h.scan("r")
        rows = h.rows()
        assert rows[b"link.bin"]["blake3"] == rows[b"a.bin"]["blake3"] == b3((root / "a.bin").read_bytes())
        assert rows[b"link.bin"]["id"] != rows[b"a.bin"]["id"]
        assert rows[b"link.bin"]["hashed_at"] is None  # the digest came from the linked row
        assert h.pipeline.scans.counters.hashed_files == 1


async def test_a_deleted_file_becomes_missing_never_deleted(tmp_path: Path) -> None:
    scanned, watched = tmp_path / "scanned", tmp_path / "watched"
    tree(scanned, {"a": b"a", "b": b"b"})
    tree(watched, {"c": b"c", "d": b"d", "dir/e": b"e", "dir/sub/f": b"f"})
    clock = Clock()
    clock.ahead()
    roots = [RootConfig("scanned", scanned, watch="poll"), RootConfig("watched", watched)]
    async with running(tmp_path, roots, clock) as h:
        # Time passes (the clock is frozen otherwise): a deletion is judged against when each
        # row was last seen, which must be before the deletion was.
        clock.advance(1.0)
        (scanned / "a").unlink()
        scan = await h.scan("scanned")
        assert scan.vanished == 1
        (watched / "c").unlink()
        notify = h.watchers.of(watched)
        assert notify is not None
        notify.feed((CHANGE_DELETED, watched / "c"))
        shutil.rmtree(watched / "dir")  # inotify names the folder: everything below it is gone
        notify.feed((CHANGE_DELETED, watched / "dir"))
        await until(lambda: h.rows()[b"dir/sub/f"]["status"] == "missing" and h.idle(), "missing")
        rows = h.rows()
        assert h.row_count() == 6
        assert {rel: row["status"] for rel, row in rows.items()} == {
            b"a": "missing",
            b"b": "present",
            b"c": "missing",
            b"d": "present",
            b"dir/e": "missing",
            b"dir/sub/f": "missing",
        }
        assert rows[b"a"]["missing_since"] is not None and rows[b"a"]["blake3"] == b3(b"a")
        assert h.pipeline.scans.counters.vanished == 4


class Meanwhile:
    """What happens on disk between settle and hash, once, before any hash starts (the hash
    workers call it first): `gone` is deleted, `changed` rewritten."""

    def __init__(self, gone: Path, changed: Path) -> None:
        self.gone, self.changed = gone, changed
        self.happened = False
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if not self.happened:
                self.gone.unlink()
                self.changed.write_bytes(b"rewritten, longer than before")
                self.happened = True


async def test_a_file_that_vanishes_or_changes_before_its_hash_in_the_fast_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        tree(root, {"gone": b"gone", "changed": b"before", "steady": b"steady"})
        clock.ahead()
        act = Meanwhile(root / "gone", root / "changed")
        real = hash_walked_for_real

        def hash_walked(
            root_id: int, name: str, raw: bytes, walked: Sequence[WalkedFile], stop: Any = None
        ) -> list[HashOutcome]:
            act()
            return real(root_id, name, raw, walked, stop)

        monkeypatch.setattr("importd.pipeline.walklane.hash_walked", hash_walked)
        scan = await h.scan("r")
        await until(h.idle, "idle")
        assert scan.state == "completed"
        rows = h.rows()
        assert set(rows) == {b"changed", b"steady"}
        assert rows[b"changed"]["blake3"] == b3(b"rewritten, longer than before")
        assert rows[b"steady"]["blake3"] == b3(b"steady")


async def test_a_file_that_vanishes_or_changes_before_its_hash_after_settling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        clock.behind()
        tree(root, {"gone": b"gone", "changed": b"before"})
        act = Meanwhile(root / "gone", root / "changed")
        hasher = h.pipeline.hasher
        real = hasher.hash_batch

        def hash_batch(root_paths: dict[int, bytes], batch: Sequence[SettledFile]) -> list[HashOutcome]:
            act()
            return real(root_paths, batch)

        monkeypatch.setattr(hasher, "hash_batch", hash_batch)
        scan = await h.pipeline.request_scan(h.root_id("r"), b"", "manual")
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 2, "both files settle")
        clock.advance(1.0)  # settled: the hash finds one gone and one changed (back to settling)
        await until(lambda: act.happened and h.pipeline.queue_sizes()["settling"] == 1, "one settles again")
        assert not scan.done.is_set()  # the scan waits for it
        clock.advance(1.0)
        await until(lambda: scan.state in TERMINAL_STATES, "the scan ends")
        assert scan.state == "completed"
        await until(h.idle, "idle")
        rows = h.rows()
        assert set(rows) == {b"changed"}
        assert rows[b"changed"]["blake3"] == b3(b"rewritten, longer than before")
        # and the pipeline goes on
        (root / "later").write_bytes(b"later")
        later = await h.pipeline.request_scan(h.root_id("r"), b"", "manual")
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 1, "the later file settles")
        clock.advance(1.0)
        await until(lambda: later.state in TERMINAL_STATES, "the later scan ends")
        assert later.state == "completed" and b"later" in h.rows()


async def test_subscribers_get_each_committed_batch_and_queues_empty_when_idle(tmp_path: Path) -> None:
    root = tmp_path / "r"
    files = {f"d{i % 3}/f{i}": os.urandom(100 + i) for i in range(40)}
    files["dup"] = files["d0/f0"]
    tree(root, files)
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        (startup,) = h.pipeline.scans.by_id.values()
        assert sorted(h.changes()) == sorted((rel.encode(), "new") for rel in files)
        assert startup.files_registered == len(files) and startup.duplicates == 1
        assert sum(r.inserted for r in h.committed) == h.pipeline.scans.counters.registered == len(files)
        assert h.pipeline.queue_sizes() == {"settling": 0, "hashing": 0} and h.pipeline.writer.pending == 0
        # A later scan's batch reaches the same subscribers, counted to that scan.
        tree(root, {"late": b"late"})
        clock.ahead()
        later = await h.scan("r")
        assert later.files_registered == 1 and h.changes()[-1] == (b"late", "new")
        await until(h.idle, "idle")
        assert h.pipeline.queue_sizes() == {"settling": 0, "hashing": 0}


async def test_reconfigure_takes_the_new_settle_time_and_intervals(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        p = h.pipeline
        (root / "first").write_bytes(b"1")
        clock.now = ctime(root / "first") + 0.5  # half a second old: settled at 0.2 s
        await h.scan("r")
        assert b"first" in h.rows() and h.tracker.observed == []

        new = replace(p.config, settle_seconds=1.0, reconcile_interval=600.0)
        p.reconfigure(new)
        assert p.config is new and p.tracker.settle_seconds == 1.0 and p.roots.reconcile_interval == 600.0
        (root / "second").write_bytes(b"2")
        clock.now = ctime(root / "second") + 0.5  # young now
        scan = await p.request_scan(h.root_id("r"), b"", "manual")
        await until(lambda: p.queue_sizes()["settling"] == 1, "the file waits in the tracker")
        assert [key for key, _ in h.tracker.observed] == [(h.root_id("r"), b"second")]
        clock.advance(1.0)
        await until(lambda: scan.state in TERMINAL_STATES, "the scan ends")
        assert h.rows()[b"second"]["blake3"] == b3(b"2")


async def test_apply_roots_starts_an_added_root_and_stops_a_removed_one(tmp_path: Path) -> None:
    kept, dropped, added = tmp_path / "kept", tmp_path / "dropped", tmp_path / "added"
    tree(kept, {"k": b"k"})
    tree(dropped, {"d": b"d"})
    tree(added, {"x": b"x", "y/z": b"z"})
    clock = Clock()
    clock.ahead()
    kept_config = RootConfig("kept", kept, watch="poll")
    async with running(tmp_path, [kept_config, RootConfig("dropped", dropped)], clock) as h:
        p = h.pipeline
        dropped_id, kept_state = h.root_id("dropped"), p.roots.by_id[h.root_id("kept")]
        watcher = h.watchers.of(dropped)
        assert watcher is not None and not watcher.closed.is_set()
        scans_before = len(p.scans.by_id)

        await p.apply_roots([kept_config, RootConfig("added", added, watch="poll")])
        assert sorted(p.roots.names().values()) == ["added", "kept"]
        assert p.roots.by_id[h.root_id("kept")] is kept_state  # unchanged: left alone
        await until(watcher.closed.is_set, "the removed root's watcher stops")
        new_scans = list(p.scans.by_id.values())[scans_before:]
        assert [(s.root_id, s.trigger) for s in new_scans] == [(h.root_id("added"), "startup")]
        await until(h.idle, "the added root is imported")
        rows = h.rows()
        assert {rel: row["status"] for rel, row in rows.items()} == dict.fromkeys(
            (b"k", b"d", b"x", b"y/z"), "present"
        )  # a removed root's files are not missing: it is no longer ours to say

        skipped = await p.request_scan(dropped_id, b"", "manual")
        await until(lambda: skipped.state in TERMINAL_STATES, "the scan ends")
        assert (skipped.state, skipped.message) == ("skipped", "root no longer configured")

        # A root whose settings changed is taken down and set up again, and reconciled.
        changed = replace(kept_config, poll_interval=30.0)
        await p.apply_roots([changed, RootConfig("added", added, watch="poll")])
        state = p.roots.by_id[h.root_id("kept")]
        assert state is not kept_state and state.config == changed
        assert [(s.root_id, s.trigger) for s in list(p.scans.by_id.values())[-1:]] == [
            (h.root_id("kept"), "startup")
        ]
        await until(h.idle, "the changed root is reconciled")
        assert h.row_count() == 4 and h.pipeline.scans.counters.hashed_files == 4


async def test_a_removed_root_drops_the_files_it_was_settling(tmp_path: Path) -> None:
    kept, dropped = tmp_path / "kept", tmp_path / "dropped"
    kept.mkdir()
    dropped.mkdir()
    clock = Clock()
    kept_config = RootConfig("kept", kept, watch="poll")
    async with running(tmp_path, [kept_config, RootConfig("dropped", dropped)], clock) as h:
        notify = h.watchers.of(dropped)
        assert notify is not None
        clock.behind()
        (dropped / "young").write_bytes(b"still being written")
        notify.feed((CHANGE_ADDED, dropped / "young"))
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 1, "the file waits in the tracker")
        await h.pipeline.apply_roots([kept_config])
        clock.advance(1.0)
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 0, "the tracker lets it go")
        await until(h.idle, "idle")
        assert h.rows() == {} and h.pipeline.scans.counters.hashed_files == 0


async def test_a_folder_that_appears_under_a_watched_root_is_scanned(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        tree(root, {"new/a": b"a", "new/deeper/b": b"b"})  # moved in: inotify reports the folder
        clock.ahead()
        notify.feed((CHANGE_ADDED, root / "new"))
        await until(lambda: any(s.trigger == "watch" for s in h.pipeline.scans.by_id.values()), "a scan")
        (scan,) = [s for s in h.pipeline.scans.by_id.values() if s.trigger == "watch"]
        await until(lambda: scan.state in TERMINAL_STATES and h.idle(), "the folder is scanned")
        assert (scan.prefix, scan.state, scan.run_id) == (b"new", "completed", None)  # no run of its own
        assert {rel: row["blake3"] for rel, row in h.rows().items()} == {
            b"new/a": b3(b"a"),
            b"new/deeper/b": b3(b"b"),
        }


async def test_a_renamed_folder_keeps_its_files_rows(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"old/a": b"a", "old/sub/b": os.urandom(3000)})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        before = {rel: row["id"] for rel, row in h.rows().items()}
        (root / "old").rename(root / "new")
        clock.ahead()
        notify.feed((CHANGE_DELETED, root / "old"), (CHANGE_ADDED, root / "new"))
        await until(lambda: any(s.trigger == "watch" for s in h.pipeline.scans.by_id.values()), "a scan")
        await until(lambda: h.idle() and b"new/sub/b" in h.rows(), "the folder is scanned")
        rows = h.rows()
        assert {rel: row["id"] for rel, row in rows.items()} == {
            b"new/a": before[b"old/a"],
            b"new/sub/b": before[b"old/sub/b"],
        }
        assert all(row["status"] == "present" for row in rows.values())
        assert h.pipeline.scans.counters.hashed_files == 2


async def test_a_hard_link_seen_by_the_watcher_takes_the_digest_without_hashing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a.bin": os.urandom(4000)})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        os.link(root / "a.bin", root / "link.bin")
        clock.ahead()
        notify.feed((CHANGE_ADDED, root / "link.bin"))
        await until(lambda: b"link.bin" in h.rows() and h.idle(), "the link is registered")
        rows = h.rows()
        assert rows[b"link.bin"]["blake3"] == rows[b"a.bin"]["blake3"]
        assert rows[b"link.bin"]["hashed_at"] is None
        assert h.pipeline.scans.counters.hashed_files == 1


async def test_a_file_changed_in_place_keeps_its_row_and_is_hashed_again(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a": b"before"})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        before = h.rows()[b"a"]
        (root / "a").write_bytes(b"after, and longer")
        clock.ahead()
        await h.scan("r")
        after = h.rows()[b"a"]
        assert (after["id"], after["blake3"], h.row_count()) == (before["id"], b3(b"after, and longer"), 1)
        assert h.pipeline.scans.counters.hashed_files == 2 and h.changes()[-1] == (b"a", "updated")


async def test_a_young_file_deleted_while_settling_is_let_go(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    clock = Clock()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        clock.behind()
        (root / "tmp").write_bytes(b"soon gone")
        scan = await h.pipeline.request_scan(h.root_id("r"), b"", "manual")
        await until(lambda: h.pipeline.queue_sizes()["settling"] == 1, "the file waits in the tracker")
        (root / "tmp").unlink()
        clock.advance(1.0)
        await until(lambda: scan.state in TERMINAL_STATES, "the scan ends")
        assert scan.state == "completed" and h.rows() == {}
        await until(h.idle, "idle")


async def test_a_file_replaced_by_a_symlink_seen_by_the_watcher_becomes_missing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    tree(root, {"a": b"a", "b": b"b"})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root)], clock) as h:
        notify = h.watchers.of(root)
        assert notify is not None
        (root / "a").unlink()
        (root / "a").symlink_to("b")
        notify.feed((CHANGE_ADDED, root / "a"))
        # Hints are handled in order: once a later file is registered, the first hint was handled.
        (root / "c").write_bytes(b"c")
        clock.ahead()
        notify.feed((CHANGE_ADDED, root / "c"))
        await until(lambda: b"c" in h.rows() and h.idle(), "the later file is registered")
        assert h.rows()[b"a"]["status"] == "missing"


@pytest.mark.xfail(
    strict=True,
    reason=(
        "one reconcile that finds a file gone and its content at a new path (a copy then delete, "
        "a move across file systems, e.g. while the daemon was stopped) gives the new path a new "
        "row and leaves the old one missing: the walk hands its changed files on before it puts "
        "VanishedRows (after the walk), so the writer finds no missing row with that content yet. "
        "README: 'a new path whose content equals a file that went missing keeps its row' (it "
        "does when two scans, or the watcher, see the deletion first)"
    ),
)
async def test_a_copy_then_delete_seen_by_one_scan_keeps_the_row(tmp_path: Path) -> None:
    root = tmp_path / "r"
    data = os.urandom(5000)
    tree(root, {"a": data})
    clock = Clock()
    clock.ahead()
    async with running(tmp_path, [RootConfig("r", root, watch="poll")], clock) as h:
        before = h.rows()[b"a"]["id"]
        (root / "b").write_bytes(data)
        (root / "a").unlink()
        clock.ahead()
        await h.scan("r")
        await until(h.idle, "idle")
        assert h.rows()[b"b"]["id"] == before and h.row_count() == 1
