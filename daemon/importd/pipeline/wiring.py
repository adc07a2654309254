"""Wires the stages: reconcile/watch -> settle -> identify -> hash -> register.

    RootWatcher ─hints─▶ route ─┐
                                ├─▶ SettleTracker ─▶ identify ─▶ BatchHasher ─▶ CatalogWriter
    reconcile walk ─changed─────┘                     (known inode? move, no re-hash)

Each stage lives in its own module and is tested alone; this module owns the queues, the tasks,
the per-root state and the counters that `importctl status` shows.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import sqlite3
import stat as stat_mod
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncEngine

from importctl.protocol import TERMINAL_STATES
from importd.api.events import EventBus
from importd.catalog import files as catalog_files
from importd.catalog import roots as catalog_roots
from importd.catalog import runs as catalog_runs
from importd.catalog.engine import open_reader, shrink_cache, sqlite_file
from importd.catalog.entities import MappingOutcome
from importd.catalog.writer import BatchResult, CatalogWriter
from importd.config import Config, RootConfig
from importd.entities import GapChange
from importd.items import (
    CatalogOp,
    CatalogSnapshot,
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    HashOutcome,
    MovedFile,
    SettledFile,
    Unsettled,
    Vanished,
    VanishedRows,
    is_regular,
    s64,
)
from importd.paths import display
from importd.pipeline.extract import MediaStage
from importd.pipeline.hasher import PIPELINE_FROM, BatchHasher, hash_walked
from importd.pipeline.mapper import EntityMapper
from importd.pipeline.reconcile import (
    DirListing,
    ReconcileComparer,
    WalkedFile,
    WalkError,
    describe_os_error,
    walk_listings,
)
from importd.pipeline.settle import SettleTracker
from importd.pipeline.watch import (
    NotifyFactory,
    PathHint,
    RootWatcher,
    WatcherDown,
    WatcherUp,
    WatchEvent,
    rust_notify,
)
from importd.runtime import collector_paused
from importd.threads import thread_named

log = logging.getLogger("importd.pipeline")

Key = tuple[int, bytes]
HASH_BATCH_FILES = 256
HASH_BATCH_BYTES = 64 << 20
# Changed files a walk hands on at a time.
WALK_BATCH_FILES = 1024
RATE_WINDOW_S = 10.0
WATCH_BACKOFF_MAX_S = 300.0


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
    # A root never reconciled before (its first import) is read before it is watched: watchfiles
    # watches IN_OPEN, so every file the import opens in a watched folder would queue an event
    # for the watcher's thread (~1 s of CPU per 100,000 files), and placing the watches walks the
    # whole tree once more. Once that first walk ends, the watch is placed and a second
    # reconcile, which only stats, picks up whatever changed in between.
    import_before_watch: bool = False

    @property
    def polling(self) -> bool:
        return self.config.watch == "poll" or self.watch_limit or self.watch_error is not None


@dataclass
class Scan:
    """One reconcile/import run and its progress, as `importctl scan --wait` shows it.

    Lifecycle: queued -> scanning (walking the tree) -> importing (settling, hashing,
    registering) -> mapping (entities and gaps) -> completed | partial (some files failed) |
    failed | cancelled | skipped (root offline)."""

    scan_id: int
    root_id: int
    prefix: bytes
    trigger: str
    state: str = "queued"
    run_id: int | None = None
    entities_created: int = 0
    entities_updated: int = 0
    files_registered: int = 0
    duplicates: int = 0
    cancelled: bool = False
    files_seen: int = 0
    changed: int = 0
    vanished: int = 0
    errors: int = 0
    started: float | None = None
    finished: float | None = None
    message: str = ""
    pending: set[Key] = field(default_factory=set)
    walk_done: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)

    def to_wire(self, root_name: str) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "run_id": self.run_id,
            "root": root_name,
            "path": os.fsdecode(self.prefix),
            "trigger": self.trigger,
            "state": self.state,
            "files_seen": self.files_seen,
            "changed": self.changed,
            "pending": len(self.pending),
            "vanished": self.vanished,
            "errors": self.errors,
            "entities_created": self.entities_created,
            "entities_updated": self.entities_updated,
            "files_registered": self.files_registered,
            "duplicates": self.duplicates,
            "started": self.started,
            "finished": self.finished,
            "message": self.message,
        }


@dataclass
class Counters:
    hashed_files: int = 0
    hashed_bytes: int = 0
    registered: int = 0
    moved: int = 0
    vanished: int = 0
    errors: int = 0
    window: deque[tuple[float, int, int]] = field(default_factory=deque)

    def record_hashes(self, now: float, files: int, nbytes: int) -> None:
        self.hashed_files += files
        self.hashed_bytes += nbytes
        self.window.append((now, files, nbytes))

    def rates(self, now: float) -> tuple[float, float]:
        while self.window and self.window[0][0] < now - RATE_WINDOW_S:
            self.window.popleft()
        files = sum(f for _, f, _ in self.window)
        nbytes = sum(b for _, _, b in self.window)
        return files / RATE_WINDOW_S, nbytes / RATE_WINDOW_S / (1 << 20)


RELEASE_MEMORY_AFTER = 20_000
# How long a start-up walk waits for the root's watcher to be in place (it walks the tree too).
WATCH_SETTLE_WAIT_S = 30.0
# Files a walk may list ahead of the catalog snapshot (about 200 bytes each).
SNAPSHOT_WAIT_FILES = 200_000


def release_memory() -> None:
    """After a big walk: collect, then hand glibc's freed arenas back to the kernel. A cold import
    of 100,000 files leaves ~100 MB of freed-but-kept heap (snapshots, queues) otherwise."""
    gc.collect()
    # Not glibc (OSError/AttributeError): the memory is reused by the next walk anyway.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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


def _lstat_many(paths: Sequence[bytes]) -> list[os.stat_result | OSError]:
    out: list[os.stat_result | OSError] = []
    for path in paths:
        try:
            out.append(os.lstat(path))
        except OSError as exc:
            out.append(exc)
    return out


class Pipeline:
    def __init__(
        self,
        config: Config,
        engine: AsyncEngine,
        notify_factory: NotifyFactory = rust_notify,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.notify_factory = notify_factory
        self.events = EventBus()
        self.writer = CatalogWriter(engine)
        self.mapper = EntityMapper(
            engine,
            self.writer,
            config.expectations,
            root_paths=lambda: {rid: st.raw_path for rid, st in self.roots.items()},
            run_ids=self._active_run_ids,
            clock=clock,
        )
        self.mapper.on_outcome = self._on_mapped
        self.media = MediaStage(
            config.media,
            engine,
            self.writer,
            root_paths=lambda: {rid: st.raw_path for rid, st in self.roots.items()},
            clock=clock,
        )
        self.mapper.listeners.append(self._publish_gaps)
        # What the writer committed goes on to these, in this order; nothing calls back here.
        self.writer.subscribe(self._on_commit)
        self.writer.subscribe(lambda result: self.events.publish_changes(result.changes, self._root_names()))
        self.writer.subscribe(self.mapper.committed)
        self.writer.subscribe(self.media.committed)
        self.tracker: SettleTracker[Key] = SettleTracker(config.settle_seconds)
        # Set on SIGTERM: worker threads (walks, hashes) check it and give up early.
        self.stopping = threading.Event()
        self.hasher = BatchHasher(stop=self.stopping)
        self.counters = Counters()
        self.roots: dict[int, RootState] = {}
        self.scans: dict[int, Scan] = {}
        self.last_scan: Scan | None = None
        self._scan_seq = 0
        self._settle_wake = anyio.Event()
        self._settled_send: MemoryObjectSendStream[SettledFile]
        self._settled_recv: MemoryObjectReceiveStream[SettledFile]
        # Bounded so a cold import of a huge tree holds back the walk instead of filling memory.
        self._settled_send, self._settled_recv = anyio.create_memory_object_stream[SettledFile](2048)
        self._scan_send: MemoryObjectSendStream[Scan]
        self._scan_recv: MemoryObjectReceiveStream[Scan]
        self._scan_send, self._scan_recv = anyio.create_memory_object_stream[Scan](1024)
        self._hashing = 0
        # Set by the service: records the symlinks a walk met (maintenance owns them).
        self.on_links: Callable[[int, list[bytes], bool], Awaitable[None]] | None = None
        self._waiting_scans: list[Scan] = []
        self._tg: TaskGroup | None = None
        self._subtree_limiter = anyio.CapacityLimiter(2)
        self._hash_limiter = anyio.CapacityLimiter(config.hash_workers)
        # Small files are hashed by one thread at a time: for them the work is Python overhead
        # under the GIL, and two threads measured slower than one. Big files (blake3 and the
        # reader release the GIL) use every hash worker.
        self._small_limiter = anyio.CapacityLimiter(1)
        self._watch_limiter = anyio.CapacityLimiter(1024)

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Register roots, then start every stage. Returns once start-up reconciles are queued."""
        self._tg = tg
        await self.writer.call(lambda c: catalog_runs.abandon_running(c, self.clock()))
        await self.mapper.load()
        tg.start_soon(self.mapper.run)
        await self.apply_roots(self.config.roots)
        startup = [scan.done for scan in self.scans.values()]
        await self.media.start(tg, after=startup)
        tg.start_soon(self._settle_driver)
        for _ in range(self.config.hash_workers):
            tg.start_soon(self._identify_and_hash)
        tg.start_soon(self._scanner)
        tg.start_soon(self._scheduler)

    async def apply_roots(self, wanted: Sequence[RootConfig]) -> None:
        """(Re)configure roots: used at start-up and on SIGHUP."""
        pairs = [(r.name, str(r.path)) for r in wanted]
        ids, known = await self.writer.call(
            lambda c: (catalog_roots.ensure_roots(c, pairs), catalog_roots.root_paths(c))
        )
        wanted_ids = {ids[r.name]: r for r in wanted}
        for root_id in list(self.roots):
            state = self.roots[root_id]
            if root_id not in wanted_ids or wanted_ids[root_id] != state.config:
                self._stop_watch(state)
                del self.roots[root_id]
                log.info("root %s removed or changed", state.config.name, extra={"root": state.config.name})
        remap = self.mapper.set_rule_sets({rid: rc.rule_set for rid, rc in wanted_ids.items()})
        for root_id in remap:
            if root_id in self.roots:
                log.info("rules of %s changed: mapping its files again", self.roots[root_id].config.name)
                await self.mapper.remap_root(root_id)
        for root_id, rc in wanted_ids.items():
            if root_id in self.roots:
                continue
            state = RootState(rc, root_id, os.fsencode(str(rc.path)))
            state.import_before_watch = rc.watch == "inotify" and known[root_id][2] is None
            self.roots[root_id] = state
            log.info("root %s at %s (%s)", rc.name, rc.path, rc.watch, extra={"root": rc.name})
            await self.request_scan(root_id, b"", "startup")

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.tracker.settle_seconds = config.settle_seconds
        self.mapper.set_expectations(config.expectations)
        self.media.reconfigure(config.media)

    async def shutdown(self) -> None:
        self.stopping.set()
        self.media.close()
        for state in self.roots.values():
            self._stop_watch(state)

    # ----- scans -----------------------------------------------------------------------------

    async def request_scan(self, root_id: int, prefix: bytes, trigger: str) -> Scan:
        self._scan_seq += 1
        scan = Scan(self._scan_seq, root_id, prefix, trigger)
        self.scans[scan.scan_id] = scan
        if len(self.scans) > 200:
            for old in sorted(self.scans)[:-200]:
                if self.scans[old].done.is_set():
                    del self.scans[old]
        if prefix and self._tg is not None:
            # A folder the watcher saw appear: small, so it does not wait behind a full walk.
            self._tg.start_soon(self._run_scan_limited, scan)
        else:
            await self._scan_send.send(scan)
        return scan

    async def _run_scan_limited(self, scan: Scan) -> None:
        async with self._subtree_limiter:
            await self._run_scan(scan)

    async def _scanner(self) -> None:
        async for scan in self._scan_recv:
            await self._run_scan(scan)

    async def _run_scan(self, scan: Scan) -> None:
        state = self.roots.get(scan.root_id)
        if state is None:
            scan.state, scan.message = "skipped", "root no longer configured"
            scan.done.set()
            return
        online, why = root_online(state.config)
        if not online:
            self._set_offline(state, why)
            scan.state, scan.message = "skipped", f"root offline: {why}"
            scan.done.set()
            return
        first_import = not scan.prefix and state.import_before_watch
        if (
            not scan.prefix
            and not first_import
            and state.config.watch == "inotify"
            and not state.watch_settled.is_set()
        ):
            with anyio.move_on_after(WATCH_SETTLE_WAIT_S):
                await state.watch_settled.wait()
        if scan.cancelled:
            scan.state = "cancelled"
            scan.done.set()
            return
        scan.started = self.clock()
        scan.state = "scanning"
        state.scanning += 1
        state.state = "scanning"
        rc = state.config
        # A folder the watcher saw appear is part of the live stream, not a run of its own:
        # copying 300 folders in must not bury the operator's runs under 300 rows.
        run_id: int | None = None
        if scan.trigger != "watch":
            run_id = await self.writer.call(
                lambda c: catalog_runs.start_run(
                    c,
                    "reconcile",
                    scan.trigger,
                    scan.root_id,
                    display(scan.prefix) or None,
                    scan.started or 0.0,
                )
            )
        scan.run_id = run_id
        self._publish_scan(scan)
        try:
            # The catalog read and the walk overlap: each takes about as long as `find` on a
            # restart, and the walk's syscalls run without the GIL.
            known: Future[CatalogSnapshot] = Future()
            # The walk of a whole root (nearly all of a cold import's work) runs without the cyclic
            # collector; not what follows, which may wait long for files still being written.
            paused = collector_paused() if not scan.prefix else contextlib.nullcontext()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._load_snapshot, scan, known)
                with paused:
                    comparer = await anyio.to_thread.run_sync(
                        self._walk_thread, state, scan, known, abandon_on_cancel=True
                    )
            diff = comparer.finish(rc.ignore)
            if scan.cancelled:
                scan.state = "cancelled"  # an unfinished walk proves nothing vanished
                return
            online, why = root_online(rc)
            if not online:
                # The mount went away during the walk: what looked gone is not gone.
                self._set_offline(state, why)
                scan.state, scan.message = "failed", f"root went offline during the walk: {why}"
                return
            if diff.vanished:
                await self.writer.put(VanishedRows(scan.root_id, tuple(diff.vanished), scan.started))
            scan.vanished = len(diff.vanished)
            scan.errors += len(diff.errors)
            if self.on_links is not None:
                await self.on_links(scan.root_id, [link.relpath for link in diff.links], not scan.prefix)
            if not scan.prefix:
                state.walk_errors = diff.errors
            for err in diff.errors:
                log.warning(
                    "cannot read %s: %s",
                    display(err.relpath) or ".",
                    err.reason,
                    extra={"root": rc.name, "path": display(err.relpath)},
                )
            scan.walk_done = True
            scan.state = "importing"
            self._publish_scan(scan)
            if not scan.pending:
                scan.done.set()
            await scan.done.wait()
            await self.writer.flush()
            if scan.cancelled:
                scan.state = "cancelled"
                return
            scan.state = "mapping"
            self._publish_scan(scan)
            await self.mapper.drain()
            if scan.cancelled:  # asked while its files were being mapped: honour it
                scan.state = "cancelled"
                return
            if not scan.prefix and not diff.errors:
                started = scan.started or 0.0
                await self.writer.call(lambda c: catalog_roots.mark_reconciled(c, scan.root_id, started))
            scan.state = "partial" if scan.errors else "completed"
        except Exception as exc:
            scan.state, scan.message = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("reconcile of %s failed", rc.name, extra={"root": rc.name})
        finally:
            if scan.cancelled and scan.state in ("completed", "partial"):
                scan.state = "cancelled"  # the operator was told it would be
            scan.finished = self.clock()
            scan.walk_done = True
            scan.done.set()
            state.scanning -= 1
            if state.state == "scanning" and state.scanning == 0:
                state.state = "polling" if state.polling else "watching"
            self.last_scan = scan
            if not scan.prefix:
                state.last_full_scan = scan.finished
            if scan.files_seen >= RELEASE_MEMORY_AFTER:
                if scan.changed >= RELEASE_MEMORY_AFTER:
                    with anyio.CancelScope(shield=True):
                        await self.writer.call(shrink_cache)  # its pages, to malloc
                release_memory()
            values = {
                "status": scan.state,
                "finished": scan.finished,
                "files_seen": scan.files_seen,
                "changed": scan.changed,
                "vanished": scan.vanished,
                "errors": scan.errors,
                "detail": scan.message or None,
                "entities_created": scan.entities_created,
                "entities_updated": scan.entities_updated,
                "files_registered": scan.files_registered,
                "duplicates": scan.duplicates,
                "gap_report": json.dumps(self.mapper.live.report().to_json(), ensure_ascii=True),
            }
            self._publish_scan(scan)
            with anyio.CancelScope(shield=True):
                if run_id is not None:
                    await self.writer.call(lambda c: catalog_runs.finish_run(c, run_id, values))
            log.info(
                "reconcile %s%s: %s, %d files seen, %d changed, %d vanished, %d unreadable, %.2fs",
                rc.name,
                "/" + display(scan.prefix) if scan.prefix else "",
                scan.state,
                scan.files_seen,
                scan.changed,
                scan.vanished,
                scan.errors,
                (scan.finished or 0) - (scan.started or 0),
                extra={"root": rc.name},
            )
            if first_import:
                self._watch_after_import(state)

    async def _load_snapshot(self, scan: Scan, known: Future[CatalogSnapshot]) -> None:
        try:
            snap = await catalog_files.read_snapshot(self.engine, scan.root_id, scan.prefix or None)
            known.set_result(snap)
        except BaseException as exc:
            known.set_exception(exc)
            raise

    def _walk_thread(self, state: RootState, scan: Scan, known: Future[CatalogSnapshot]) -> ReconcileComparer:
        """Runs in a worker thread; hands changed files on in batches. Until the catalog
        snapshot arrives, listings wait in memory, their files still in the reader's C buffers
        (a bounded number of files, then the walk waits)."""
        db_file = sqlite_file(self.engine)
        reader = open_reader(db_file) if db_file is not None else None
        try:
            with thread_named("importd-walk"):
                return self._walk_with(state, scan, known, reader)
        finally:
            if reader is not None:
                reader.close()

    def _walk_with(
        self, state: RootState, scan: Scan, known: Future[CatalogSnapshot], reader: sqlite3.Connection | None
    ) -> ReconcileComparer:
        batch: list[WalkedFile] = []
        early: list[DirListing] = []
        early_files = 0
        comparer: ReconcileComparer | None = None
        for listing in walk_listings(state.raw_path, scan.prefix, state.config.ignore):
            if self.stopping.is_set() or scan.cancelled:
                break
            if comparer is None:
                if not known.done() and early_files < SNAPSHOT_WAIT_FILES:
                    early.append(listing)
                    early_files += len(listing)
                    continue
                comparer = ReconcileComparer(known.result(), keep_changed=False)
                for waited in early:
                    batch += comparer.feed(waited)
                early = []
            batch += comparer.feed(listing)
            if len(batch) >= WALK_BATCH_FILES:
                self._hand_on_walked(state, scan, batch, reader)
                batch = []
            scan.files_seen = comparer.diff.seen
        if comparer is None:
            comparer = ReconcileComparer(known.result(), keep_changed=False)
            for waited in early:
                batch += comparer.feed(waited)
            scan.files_seen = comparer.diff.seen
        if batch and not (self.stopping.is_set() or scan.cancelled):
            self._hand_on_walked(state, scan, batch, reader)
        return comparer

    def _hand_on_walked(
        self, state: RootState, scan: Scan, batch: list[WalkedFile], reader: sqlite3.Connection | None
    ) -> None:
        """In the walk's thread. Files untouched for settle_seconds already (their ctime says so:
        every write and every metadata change sets it, and nothing sets it back) are settled:
        they are identified, hashed and queued for the catalog right here, a batch at a time.
        That is nearly every file of a cold import, which so skips the per-file trip through
        the settle tracker and the event loop. The others settle as the watcher's files do."""
        still_since = int((self.clock() - self.config.settle_seconds) * 1e9)
        young = [item for item in batch if item.ctime_ns > still_since]
        if young:
            anyio.from_thread.run(self._accept_walked, state, scan, young)
        if len(young) == len(batch):
            return
        old = [item for item in batch if item.ctime_ns <= still_since]
        scan.changed += len(old)
        self._hashing += len(old)
        try:
            matches: list[catalog_files.IdentityMatch] | None = None
            if reader is not None:
                # Signatures hold inode and dev as the catalog does (signed).
                matches = catalog_files.identities_sqlite(
                    reader, [(w.signature[3], w.signature[2]) for w in old]
                )
            if matches == []:  # no row knows these inodes (a cold import): hash them all
                outcomes = hash_walked(state.root_id, state.config.name, state.raw_path, old, self.stopping)
            else:
                ref = state.root_id, state.config.name
                settled = [SettledFile(FileRef(*ref, item.relpath), item.stat) for item in old]
                if matches is None:
                    to_hash = anyio.from_thread.run(self._identify, settled)
                else:
                    to_hash, ops, done = self._match_identities(settled, matches)
                    if ops or done:
                        anyio.from_thread.run(self._put_and_done, ops, done)
                outcomes = []
                if to_hash and not self.stopping.is_set():
                    outcomes = self.hasher.hash_batch({state.root_id: state.raw_path}, to_hash)
            if outcomes:
                anyio.from_thread.run(self._record_outcomes, outcomes, scan)
        finally:
            self._hashing -= len(old)

    async def _accept_walked(self, state: RootState, scan: Scan, batch: list[WalkedFile]) -> None:
        now = self.clock()
        scan.changed += len(batch)
        if not scan.pending and scan not in self._waiting_scans:
            self._waiting_scans.append(scan)
        for item in batch:
            key = (state.root_id, item.relpath)
            scan.pending.add(key)
            await self._observe(key, state.config.name, item.stat, now)

    # ----- settle ----------------------------------------------------------------------------

    async def _observe(self, key: Key, root_name: str, stat: FileStat, now: float) -> None:
        if self.tracker.observe(key, stat, now):
            settled = SettledFile(FileRef(key[0], root_name, key[1]), stat)
            try:
                self._settled_send.send_nowait(settled)  # no checkpoint per file while there is room
            except anyio.WouldBlock:
                await self._settled_send.send(settled)
        else:
            self._settle_wake.set()

    async def _settle_driver(self) -> None:
        while True:
            deadline = self.tracker.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with anyio.move_on_after(timeout):
                await self._settle_wake.wait()
            self._settle_wake = anyio.Event()
            due = self.tracker.due(self.clock())
            if not due:
                continue
            paths = [self._abs(key) for key in due]
            results = await anyio.to_thread.run_sync(_lstat_many, paths)
            now = self.clock()
            for key, res in zip(due, results, strict=True):
                state = self.roots.get(key[0])
                if state is None:
                    self.tracker.forget(key)
                    self._done(key)
                    continue
                if isinstance(res, OSError) or not is_regular(res):
                    self.tracker.forget(key)
                    await self._gone(state, key[1])
                    continue
                await self._observe(key, state.config.name, FileStat.of(res), now)

    # ----- identify and hash -----------------------------------------------------------------

    async def _identify_and_hash(self) -> None:
        recv = self._settled_recv.clone()
        async with recv:
            while True:
                try:
                    first = await recv.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                total = first.stat.size
                while len(batch) < HASH_BATCH_FILES and total < HASH_BATCH_BYTES:
                    try:
                        item = recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    batch.append(item)
                    total += item.stat.size
                self._hashing += len(batch)
                try:
                    await self._process_settled(batch)
                finally:
                    self._hashing -= len(batch)

    async def _process_settled(self, batch: list[SettledFile]) -> None:
        to_hash = await self._identify(batch)
        if not to_hash:
            return
        root_paths = {rid: st.raw_path for rid, st in self.roots.items()}
        big = any(s.stat.size >= PIPELINE_FROM for s in to_hash)
        async with self._hash_limiter if big else self._small_limiter:
            outcomes = await anyio.to_thread.run_sync(
                self.hasher.hash_batch, root_paths, to_hash, abandon_on_cancel=True
            )
        await self._record_outcomes(outcomes)

    async def _record_outcomes(self, outcomes: list[HashOutcome], scan: Scan | None = None) -> None:
        """Hash outcomes to the catalog writer; files that changed meanwhile settle again (for
        `scan`, when given, which then waits for them)."""
        now = self.clock()
        debug = log.isEnabledFor(logging.DEBUG)
        hashed = [o for o in outcomes if type(o) is HashedFile]
        self.counters.record_hashes(now, len(hashed), sum(o.stat.size for o in hashed))
        if len(hashed) == len(outcomes) and not debug and all(o.ref.root_id in self.roots for o in hashed):
            # The usual batch: one hand-over. A walk's batches are a stream (bulk).
            await self.writer.put_many(list(hashed), bulk=scan is not None)
            if self._waiting_scans:
                for o in hashed:
                    self._done((o.ref.root_id, o.ref.relpath))
            return
        for outcome in outcomes:
            key = (outcome.ref.root_id, outcome.ref.relpath)
            state = self.roots.get(key[0])
            if state is None:
                self._done(key)
                continue
            if isinstance(outcome, Unsettled):
                if scan is not None and not scan.done.is_set():
                    if not scan.pending and scan not in self._waiting_scans:
                        self._waiting_scans.append(scan)
                    scan.pending.add(key)
                await self._recheck(state, key)
                continue
            if isinstance(outcome, Vanished):
                await self._gone(state, key[1])
                continue
            if isinstance(outcome, FileFailure):
                log.warning(
                    "%s/%s: %s",
                    state.config.name,
                    display(key[1]),
                    outcome.reason,
                    extra={"root": state.config.name, "path": display(key[1])},
                )
            elif debug:
                log.debug(
                    "hashed %s/%s",
                    state.config.name,
                    display(key[1]),
                    extra={"root": state.config.name, "path": display(key[1]), "hash": outcome.blake3},
                )
            await self.writer.put(outcome)
            self._done(key)

    async def _identify(self, batch: list[SettledFile]) -> list[SettledFile]:
        """Ask the catalog what it knows of these inodes: a rename or a hard link of a known file
        needs no hashing. Returns the files that still need hashing."""
        async with self.engine.connect() as conn:
            matches = await conn.run_sync(
                catalog_files.identities, [(s.stat.dev, s.stat.inode) for s in batch]
            )
        to_hash, ops, done = self._match_identities(batch, matches)
        await self._put_and_done(ops, done)
        return to_hash

    async def _put_and_done(self, ops: list[CatalogOp], done: list[Key]) -> None:
        for op in ops:
            await self.writer.put(op)
        for key in done:
            self._done(key)

    def _match_identities(
        self, batch: list[SettledFile], matches: list[catalog_files.IdentityMatch]
    ) -> tuple[list[SettledFile], list[CatalogOp], list[Key]]:
        """What the catalog's rows with these inodes make of each file: unchanged (done), moved
        here or a hard link (an op, no hashing), or to be hashed."""
        by_identity: dict[tuple[int, int], list[catalog_files.IdentityMatch]] = {}
        for m in matches:
            by_identity.setdefault((m.dev, m.inode), []).append(m)
        to_hash: list[SettledFile] = []
        ops: list[CatalogOp] = []
        done: list[Key] = []
        if not by_identity:
            return list(batch), ops, done
        for settled in batch:
            st = settled.stat
            key = (settled.ref.root_id, settled.ref.relpath)
            candidates = [
                m
                for m in by_identity.get((s64(st.dev), s64(st.inode)), [])
                if m.size == st.size and m.mtime_ns == st.mtime_ns and m.blake3
            ]
            here = next(
                (m for m in candidates if (m.root_id, m.relpath) == key and m.status == "present"), None
            )
            if here is not None:
                done.append(key)  # unchanged: a touch that changed nothing we compare
                continue
            elsewhere = [m for m in candidates if (m.root_id, m.relpath) != key]
            moved_from = next((m for m in elsewhere if not self._path_exists_as(m)), None)
            if moved_from is not None and moved_from.blake3:
                ops.append(MovedFile(settled.ref, st, moved_from.row_id, moved_from.blake3))
                log.info(
                    "moved %s -> %s",
                    display(moved_from.relpath),
                    display(settled.ref.relpath),
                    extra={"root": settled.ref.root_name, "path": display(settled.ref.relpath)},
                )
                done.append(key)
            elif elsewhere and elsewhere[0].blake3:
                # A hard link of a file we hashed: same inode, same size and mtime, same bytes.
                ops.append(HashedFile(settled.ref, st, elsewhere[0].blake3, hashed=False))
                done.append(key)
            else:
                to_hash.append(settled)
        return to_hash, ops, done

    def _path_exists_as(self, m: catalog_files.IdentityMatch) -> bool:
        """Is the matched row's own path still that inode on disk? If not, the file moved."""
        if m.status == "missing":
            return False
        state = self.roots.get(m.root_id)
        if state is None:
            return True  # root not configured now: do not steal its rows
        try:
            st = os.lstat(state.raw_path + b"/" + m.relpath)
        except OSError:
            return False
        return (s64(st.st_ino), s64(st.st_dev)) == (m.inode, m.dev)

    async def _recheck(self, state: RootState, key: Key) -> None:
        try:
            st = await anyio.to_thread.run_sync(os.lstat, self._abs(key))
        except OSError:
            await self._gone(state, key[1])
            return
        if not is_regular(st):
            await self._gone(state, key[1])
            return
        await self._observe(key, state.config.name, FileStat.of(st), self.clock())

    async def _gone(self, state: RootState, relpath: bytes, subtree: bool = False) -> None:
        key = (state.root_id, relpath)
        self.tracker.forget(key)
        online, why = root_online(state.config)
        if online:
            await self.writer.put(Vanished(FileRef(state.root_id, state.config.name, relpath), subtree))
        else:
            self._set_offline(state, why)
        self._done(key)

    def _done(self, key: Key) -> None:
        # Only scans still waiting for files: the registry keeps up to 200 finished ones.
        for scan in self._waiting_scans:
            if key in scan.pending:
                scan.pending.discard(key)
                if not scan.pending and scan.walk_done:
                    scan.done.set()
        if self._waiting_scans and any(s.done.is_set() or not s.pending for s in self._waiting_scans):
            self._waiting_scans = [s for s in self._waiting_scans if s.pending and not s.done.is_set()]

    def _abs(self, key: Key) -> bytes:
        return self.roots[key[0]].raw_path + b"/" + key[1]

    # ----- watch -----------------------------------------------------------------------------

    def _watch_after_import(self, state: RootState) -> None:
        """A root's first import has ended (however it ended): watch it from now on, and walk it
        once more behind the watch (that walk waits for it) for what changed meanwhile."""
        state.import_before_watch = False
        if self._tg is None or self.stopping.is_set() or self.roots.get(state.root_id) is not state:
            return
        if state.state == "offline":
            return  # the scheduler watches and reconciles it when it is back
        if state.state == "watching":
            state.state = "starting"  # until the watcher says it is in place
        self._start_watch(state)
        self._tg.start_soon(self.request_scan, state.root_id, b"", "after-import")

    def _start_watch(self, state: RootState) -> None:
        if self._tg is None or state.stop_watch is not None:
            return
        stop = threading.Event()
        state.stop_watch = stop
        self._tg.start_soon(self._watch_root, state, stop)

    def _stop_watch(self, state: RootState) -> None:
        if state.stop_watch is not None:
            state.stop_watch.set()
            state.stop_watch = None

    async def _watch_root(self, state: RootState, stop: threading.Event) -> None:
        send, recv = anyio.create_memory_object_stream[WatchEvent](4096)

        def emit(event: WatchEvent) -> None:
            # ClosedResource/BrokenResource/RuntimeError: the pipeline stopped; the thread ends.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
                anyio.from_thread.run(send.send, event)

        watcher = RootWatcher(state.config.path, state.config.ignore, emit, factory=self.notify_factory)

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
                    if isinstance(event, WatcherDown):
                        await self._watcher_down(state, event)
                    elif isinstance(event, WatcherUp):
                        state.watch_error = None
                        state.watch_limit = False
                        if state.state in ("starting", "polling"):
                            state.state = "watching"
                    else:
                        if state.watch_failures and watcher.ready.is_set():
                            state.watch_failures = 0
                        await self._route_hints(state, event)
        if state.stop_watch is stop:
            state.stop_watch = None

    async def _watcher_down(self, state: RootState, event: WatcherDown) -> None:
        state.watch_failures += 1
        delay = min(WATCH_BACKOFF_MAX_S, 2.0 ** min(state.watch_failures, 12))
        state.watch_error = event.reason
        state.watch_limit = event.limit
        state.next_watch_try = self.clock() + (WATCH_BACKOFF_MAX_S if event.limit else delay)
        if state.state != "offline":
            state.state = "polling"
        log.warning(
            "watcher for %s: %s; reconciling, polling every %.0fs, retrying inotify in %.0fs",
            state.config.name,
            event.reason,
            state.config.poll_interval,
            state.next_watch_try - self.clock(),
            extra={"root": state.config.name},
        )
        await self.request_scan(state.root_id, b"", "watcher-failure")

    async def _route_hints(self, state: RootState, hints: list[PathHint]) -> None:
        paths = [state.raw_path + b"/" + h.relpath for h in hints]
        results = await anyio.to_thread.run_sync(_lstat_many, paths)
        now = self.clock()
        for hint, res in zip(hints, results, strict=True):
            key = (state.root_id, hint.relpath)
            if isinstance(res, OSError):
                # Gone (or unreadable): mark it, and anything below it, missing.
                await self._gone(state, hint.relpath, subtree=True)
                continue
            if stat_mod.S_ISDIR(res.st_mode):
                if hint.added_dir_possible:
                    await self.request_scan(state.root_id, hint.relpath, "watch")
                continue
            if not is_regular(res):
                continue  # symlinks, fifos, devices: not catalogued as files
            await self._observe(key, state.config.name, FileStat.of(res), now)

    # ----- scheduler: offline roots, polling, periodic reconcile, watcher retries -------------

    def _set_offline(self, state: RootState, why: str) -> None:
        if state.state != "offline":
            log.warning("root %s offline: %s", state.config.name, why, extra={"root": state.config.name})
        state.state = "offline"
        state.watch_error = why
        self._stop_watch(state)

    async def _scheduler(self) -> None:
        while True:
            now = self.clock()
            for state in list(self.roots.values()):
                online, why = root_online(state.config)
                if not online:
                    self._set_offline(state, why)
                    continue
                if state.state == "offline":
                    log.info("root %s back online", state.config.name, extra={"root": state.config.name})
                    state.state = "starting"
                    state.watch_error = None
                    state.watch_limit = False
                    await self.request_scan(state.root_id, b"", "online")
                want_inotify = state.config.watch == "inotify"
                if (
                    want_inotify
                    and state.stop_watch is None
                    and now >= state.next_watch_try
                    and not state.import_before_watch
                ):
                    self._start_watch(state)
                if state.state == "starting" and not want_inotify:
                    state.state = "polling"
                interval = state.config.poll_interval if state.polling else self.config.reconcile_interval
                if not state.scanning and state.last_full_scan and now >= state.last_full_scan + interval:
                    state.last_full_scan = now  # until this one ends
                    await self.request_scan(state.root_id, b"", "poll" if state.polling else "periodic")
            await anyio.sleep(1.0)

    # ----- counters --------------------------------------------------------------------------

    def _active_scans(self) -> dict[int, Scan]:
        """The running full-root scan of each root, which committed changes are counted to."""
        active: dict[int, Scan] = {}
        for scan in self.scans.values():
            if scan.state in ("scanning", "importing", "mapping") and (
                scan.root_id not in active or not scan.prefix
            ):
                active[scan.root_id] = scan
        return active

    def _active_run_ids(self) -> dict[int, int | None]:
        return {rid: scan.run_id for rid, scan in self._active_scans().items()}

    def _on_commit(self, result: BatchResult) -> None:
        c = self.counters
        c.registered += result.inserted + result.revived
        c.moved += result.moved
        c.vanished += result.vanished
        c.errors += result.errors
        active = self._active_scans()
        for change in result.changes:
            scan = active.get(change.root_id)
            if scan is not None:
                if change.kind in ("new", "revived", "moved", "updated"):
                    scan.files_registered += 1
                elif change.kind == "error":
                    scan.errors += 1
                scan.duplicates += change.duplicate

    def _on_mapped(self, outcome: MappingOutcome) -> None:
        by_run = {scan.run_id: scan for scan in self.scans.values() if scan.run_id is not None}
        for run_id, n in outcome.created.items():
            if run_id in by_run:
                by_run[run_id].entities_created += n
        for run_id, n in outcome.updated.items():
            if run_id in by_run:
                by_run[run_id].entities_updated += n

    def _publish_gaps(self, changes: list[GapChange]) -> None:
        entities = []
        for change in changes[:50]:
            after = change.after or change.before
            if after is None:
                continue
            missing = change.after.missing if change.after else ()
            entities.append(
                {
                    "type": after.type,
                    "name": after.name,
                    "missing": [{"kind": m.kind, "name": m.name} for m in missing],
                }
            )
        self.events.publish(
            "gaps", {"completeness": self.mapper.live.completeness().to_json(), "changed": entities}
        )

    def _root_names(self) -> dict[int, str]:
        return {rid: st.config.name for rid, st in self.roots.items()}

    def _publish_scan(self, scan: Scan) -> None:
        state = self.roots.get(scan.root_id)
        self.events.publish("run", scan.to_wire(state.config.name if state else "?"))

    def cancel_scan(self, scan: Scan) -> bool:
        if scan.state in TERMINAL_STATES:
            return False
        scan.cancelled = True
        if scan.state == "queued":
            scan.state = "cancelled"
        for key in list(scan.pending):
            scan.pending.discard(key)
        scan.done.set()
        return True

    def queue_sizes(self) -> dict[str, int]:
        queued = self._settled_send.statistics().current_buffer_used
        return {"settling": len(self.tracker), "hashing": self._hashing + queued}


__all__ = ["Pipeline", "RootState", "Scan", "root_online"]
