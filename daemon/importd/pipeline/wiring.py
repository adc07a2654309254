"""Wires the stages: reconcile/watch -> settle -> identify -> hash -> register.

    Roots (watchers) ─hints─▶ lstat ─┐
                                     ├─▶ SettleTracker ─▶ identify ─▶ BatchHasher ─▶ CatalogWriter
    Scans (walks) ──changed files────┘                  (known inode?
                                                         moved, no re-hash)

A walk's changed files whose ctime is already `settle_seconds` old are settled: the walk's own
thread takes them through the same identify and hash stages, a batch at a time (the fast lane),
which is nearly all of a cold import. The stages live in their own modules (roots.py, scans.py,
settle.py, identify.py, hasher.py, catalog/writer.py); this module creates the queues and hands
items from one stage to the next. What the writer commits goes on to whoever subscribed.
"""

from __future__ import annotations

import functools
import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Sequence

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.brake import VanishLimits
from importd.catalog import files as catalog_files
from importd.catalog import roots as catalog_roots
from importd.catalog import runs as catalog_runs
from importd.catalog.writer import CatalogWriter
from importd.config import Config, RootConfig
from importd.entities import GapEvent
from importd.items import (
    FileFailure,
    FileRef,
    FileStat,
    HashedFile,
    HashOutcome,
    SettledFile,
    Unsettled,
    Vanished,
    is_regular,
)
from importd.paths import display
from importd.pipeline.backlog import BacklogLine, LegacyBacklog
from importd.pipeline.extract import MediaStage
from importd.pipeline.hasher import PIPELINE_FROM, BatchHasher
from importd.pipeline.identify import Identified, catalog_matches, disk_view, identify, inodes_of
from importd.pipeline.mapper import EntityMapper
from importd.pipeline.reconcile import WalkedFile
from importd.pipeline.roots import Roots, RootState
from importd.pipeline.scans import Scan, Scans
from importd.pipeline.settle import SettleTracker
from importd.pipeline.site_attributes import SiteAttributes
from importd.pipeline.vanish import GoneBursts
from importd.pipeline.walklane import LaneExits, WalkLane
from importd.pipeline.watch import Hint, NotifyFactory, RenameHint, kernel_inotify
from importd.priority import run_lowered

log = logging.getLogger("importd.pipeline")

Key = tuple[int, bytes]
HASH_BATCH_FILES = 256
HASH_BATCH_BYTES = 64 << 20
# Files whose last failure is remembered (so it is logged once); past it the memory starts anew.
WARNED_FAILURES_MAX = 100_000


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
        notify_factory: NotifyFactory = kernel_inotify,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        # Set on SIGTERM: worker threads (walks, hashes) check it and give up early.
        self.stopping = threading.Event()
        # One clock: a deletion's time is compared with rows'.
        self.writer = CatalogWriter(engine, clock=clock, host=config.host)
        self.writer.limits = VanishLimits.of(config.safety)
        self.roots = Roots(
            self.request_scan, self._route_hints, config.reconcile_interval, notify_factory, clock
        )
        self.mapper = EntityMapper(
            engine,
            self.writer,
            config.expectations,
            root_paths=self.roots.paths,
            run_ids=lambda: self.scans.active_run_ids(),
            clock=clock,
        )
        self.media = MediaStage(config.media, engine, self.writer, root_paths=self.roots.paths, clock=clock)
        self.site = SiteAttributes(
            engine,
            config.host,
            lambda t, k: self.mapper.live.attributes_of(t, k),
            self.emit_gap_events,
            clock,
        )
        self.hasher = BatchHasher(stop=self.stopping)
        self._on_disk = disk_view(self.roots.paths)
        exits = LaneExits(self._settle_walked, self._identify, self._put_and_done, self._record_outcomes)
        self.lane = WalkLane(
            engine,
            exits,
            self.hasher,
            self._on_disk,
            lambda: self.config.settle_seconds,
            self.stopping,
            clock,
            host=config.host,
        )
        self.scans = Scans(
            self.roots,
            self.writer,
            walk=self.lane.walk,
            known_rows=lambda root_id, prefix: catalog_files.known_rows(engine, root_id, prefix),
            drain_mapping=self.mapper.drain,
            gap_report=lambda: self.mapper.live.report().to_json(),
            stopping=self.stopping,
            clock=clock,
        )
        self.mapper.on_outcome = self.scans.count_mapped
        # The legacy catalog's backlog feeds the same identify -> hash -> register line, only
        # while the live line is idle.
        self.backlog = LegacyBacklog(
            engine,
            self.writer,
            BacklogLine(self._identify, self._hash_lowered, self._record_outcomes),
            live_busy=self._live_busy,
            roots=lambda: {rid: (st.name, st.raw_path) for rid, st in self.roots.by_id.items()},
            emit=self.emit_gap_events,
            drain_mapping=self.mapper.drain,
            clock=clock,
        )
        # Registration ends the line: what the writer committed goes on to whoever listens.
        self.writer.subscribe(self.scans.count_committed)
        self.writer.subscribe(self.mapper.committed)
        self.writer.subscribe(self.media.committed)
        self.gone = GoneBursts(self.roots, self.writer, clock)
        self.writer.subscribe(self.gone.held_changed)
        self.tracker: SettleTracker[Key] = SettleTracker(config.settle_seconds)
        self._settle_wake = anyio.Event()
        self._settled_send: MemoryObjectSendStream[SettledFile]
        self._settled_recv: MemoryObjectReceiveStream[SettledFile]
        # Bounded so a cold import of a huge tree holds back the walk instead of filling memory.
        self._settled_send, self._settled_recv = anyio.create_memory_object_stream[SettledFile](2048)
        self._hashing = 0
        self._hash_limiter = anyio.CapacityLimiter(config.hash_workers)
        # Small files are hashed by one thread at a time: for them the work is Python overhead
        # under the GIL, and two threads measured slower than one. Big files (blake3 and the
        # reader release the GIL) use every hash worker.
        self._small_limiter = anyio.CapacityLimiter(1)
        # The failure last logged per file: a file retried by every reconcile (a path past
        # PATH_MAX, a permission) is warned of once; `importctl errors` lists it meanwhile.
        self._warned: dict[Key, str] = {}
        self._tg: TaskGroup | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Register roots, then start every stage. Returns once start-up reconciles are queued."""
        self.roots.bind(tg)
        self._tg = tg
        await self.writer.call(lambda c: catalog_runs.abandon_running(c, self.writer.host, self.clock()))
        await self.mapper.load()
        tg.start_soon(self.mapper.run)
        tg.start_soon(self.site.run)
        tg.start_soon(self.scans.run, tg)
        await self.apply_roots(self.config.roots)
        await self.backlog.load()  # its counts are this host's: after the roots are adopted
        startup = [scan.done for scan in self.scans.by_id.values()]
        await self.media.start(tg, after=startup)
        tg.start_soon(self._settle_driver)
        tg.start_soon(self.gone.run)
        for _ in range(self.config.hash_workers):
            tg.start_soon(self._identify_and_hash)
        tg.start_soon(self.roots.run_scheduler)
        tg.start_soon(self.backlog.run)

    async def apply_roots(self, wanted: Sequence[RootConfig]) -> None:
        """(Re)configure roots: used at start-up and on SIGHUP."""
        pairs = [(r.name, str(r.path)) for r in wanted]
        host = self.writer.host
        ids, known = await self.writer.call(
            lambda c: (catalog_roots.ensure_roots(c, host, pairs), catalog_roots.root_paths(c, host))
        )
        wanted_ids = {ids[r.name]: r for r in wanted}
        for root_id, state in list(self.roots.by_id.items()):
            if root_id not in wanted_ids or wanted_ids[root_id] != state.config:
                self.roots.remove(root_id)
        remap = self.mapper.set_rule_sets({rid: rc.rule_set for rid, rc in wanted_ids.items()})
        for root_id in remap:
            if root_id in self.roots.by_id:
                log.info("rules of %s changed: mapping its files again", self.roots.by_id[root_id].name)
                await self.mapper.remap_root(root_id)
        for root_id, rc in wanted_ids.items():
            if root_id not in self.roots.by_id:
                self.roots.add(root_id, rc, first_import=known[root_id][2] is None)
                await self.request_scan(root_id, b"", "startup")

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.tracker.settle_seconds = config.settle_seconds
        self.roots.reconcile_interval = config.reconcile_interval
        self.mapper.set_expectations(config.expectations)
        self.media.reconfigure(config.media)
        self.writer.limits = VanishLimits.of(config.safety)

    async def shutdown(self) -> None:
        """After the stages' tasks were cancelled: stop the threads, close every queue."""
        self.stopping.set()
        self.roots.stop_all()
        self.media.close()
        self.mapper.close()
        self.scans.close()
        self._settled_send.close()
        self._settled_recv.close()

    async def request_scan(self, root_id: int, prefix: bytes, trigger: str) -> Scan:
        return await self.scans.request(root_id, prefix, trigger)

    def emit_gap_events(self, events: list[GapEvent]) -> None:
        """A write outside the mapper (a migration, the backlog): its events to the live report."""
        for event in events:
            self.mapper.emit(self.mapper.live.apply(event))

    def _live_busy(self) -> bool:
        sizes = self.queue_sizes()
        scanning = any(st.state in ("starting", "scanning") for st in self.roots.by_id.values())
        return bool(sizes["settling"] or sizes["hashing"] or self.scans.waiting or scanning)

    def queue_sizes(self) -> dict[str, int]:
        queued = self._settled_send.statistics().current_buffer_used
        # Deletions waiting for their burst to close settle too.
        return {
            "settling": len(self.tracker) + len(self.gone),
            "hashing": self._hashing + self.lane.hashing + queued,
        }

    # ----- watch hints and walks -> settle ---------------------------------------------------

    async def _route_hints(self, state: RootState, hints: list[Hint]) -> None:
        paths = [state.raw_path + b"/" + (h.new if isinstance(h, RenameHint) else h.relpath) for h in hints]
        results = await anyio.to_thread.run_sync(_lstat_many, paths)
        now = self.clock()
        renamed: list[tuple[RenameHint, SettledFile]] = []
        for hint, res in zip(hints, results, strict=True):
            if isinstance(hint, RenameHint):
                if isinstance(res, OSError):  # renamed again, or deleted, since
                    await self._gone(state, hint.old, subtree=True)
                    await self._gone(state, hint.new, subtree=True)
                elif stat_mod.S_ISDIR(res.st_mode):
                    await self._follow_folder(state, hint)
                elif is_regular(res):
                    ref = FileRef(state.root_id, state.name, hint.new)
                    renamed.append((hint, SettledFile(ref, FileStat.of(res))))
                else:
                    await self._gone(state, hint.old, subtree=True)
            elif isinstance(res, OSError):
                # Gone (or unreadable): mark it, and anything below it, missing.
                await self._gone(state, hint.relpath, subtree=True)
            elif stat_mod.S_ISDIR(res.st_mode):
                if hint.added_dir_possible:
                    await self.request_scan(state.root_id, hint.relpath, "watch")
            elif is_regular(res):
                await self._observe((state.root_id, hint.relpath), state.name, FileStat.of(res), now)
            else:  # now a symlink, fifo or device: not catalogued, so what was there is gone
                await self._gone(state, hint.relpath, subtree=True)
        if renamed:
            await self._follow_files(state, renamed, now)

    async def _follow_files(
        self, state: RootState, renamed: list[tuple[RenameHint, SettledFile]], now: float
    ) -> None:
        """Renamed files go straight to identify, without waiting for settle (a rename sets the
        file's ctime): a row with the same (dev, inode), size and mtime whose path no longer
        holds that inode follows its file, with no re-hash. Any other file (changed, or never
        registered) settles at its new path, and its old path is gone."""
        for hint, _ in renamed:
            # A scan may wait for the old path (walked while young, then settling): the file is
            # not there any more, so that scan must stop waiting for it (it stayed `scanning`
            # for good: crash trials, seed 6069).
            self.tracker.forget((state.root_id, hint.old))
            self.scans.file_done((state.root_id, hint.old))
        batch = [settled for _, settled in renamed]
        found = identify(
            batch, await catalog_matches(self.engine, inodes_of(batch), self.writer.host), self._on_disk
        )
        await self._put_and_done(found)
        to_settle = {settled.ref.relpath for settled in found.to_hash}
        for hint, settled in renamed:
            if hint.new in to_settle:
                await self._gone(state, hint.old)
                await self._observe((state.root_id, hint.new), state.name, settled.stat, now)

    async def _follow_folder(self, state: RootState, hint: RenameHint) -> None:
        """A folder renamed inside the root: its files keep their inodes and their ctimes, so a
        walk of the new folder takes them through the walk's fast lane to identify (no settle
        wait, no re-hash). What is still catalogued under the old name after that walk is gone;
        it is not marked before, so the folder's rows never look missing meanwhile."""
        scan = await self.request_scan(state.root_id, hint.new, "watch")
        if self._tg is None:
            return

        async def then_mark_the_rest() -> None:
            await scan.done.wait()
            leftover = await anyio.to_thread.run_sync(_lstat_many, [state.raw_path + b"/" + hint.old])
            if isinstance(leftover[0], OSError) and self.roots.get(state.root_id) is state:
                await self._gone(state, hint.old, subtree=True)

        self._tg.start_soon(then_mark_the_rest)

    async def _settle_walked(self, state: RootState, scan: Scan, batch: list[WalkedFile]) -> None:
        now = self.clock()
        scan.changed += len(batch)
        for item in batch:
            key = (state.root_id, item.relpath)
            self.scans.expect(scan, key)
            await self._observe(key, state.name, item.stat, now)

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
            if due:
                await self._restat(due)

    async def _restat(self, keys: list[Key]) -> None:
        """Stat these files again: what is gone is marked so, the rest goes back to settling."""
        root_paths = self.roots.paths()
        # A file of a root removed meanwhile is not statted (b"": ENOENT) and only forgotten.
        paths = [root_paths[rid] + b"/" + rel if rid in root_paths else b"" for rid, rel in keys]
        results = await anyio.to_thread.run_sync(_lstat_many, paths)
        now = self.clock()
        for key, res in zip(keys, results, strict=True):
            state = self.roots.get(key[0])
            if state is None:  # its root was removed meanwhile
                self.tracker.forget(key)
                self.scans.file_done(key)
            elif isinstance(res, OSError) or not is_regular(res):
                await self._gone(state, key[1])
            else:
                await self._observe(key, state.name, FileStat.of(res), now)

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
                    to_hash = await self._identify(batch)
                    if to_hash:
                        await self._record_outcomes(await self._hash(to_hash))
                finally:
                    self._hashing -= len(batch)

    async def _identify(self, batch: list[SettledFile]) -> list[SettledFile]:
        """Renames and hard links of known files need no hashing. Returns the files that do."""
        found = identify(
            batch, await catalog_matches(self.engine, inodes_of(batch), self.writer.host), self._on_disk
        )
        await self._put_and_done(found)
        return found.to_hash

    async def _hash(self, to_hash: list[SettledFile]) -> list[HashOutcome]:
        big = any(s.stat.size >= PIPELINE_FROM for s in to_hash)
        async with self._hash_limiter if big else self._small_limiter:
            return await anyio.to_thread.run_sync(
                self.hasher.hash_batch, self.roots.paths(), to_hash, abandon_on_cancel=True
            )

    async def _hash_lowered(self, to_hash: list[SettledFile]) -> list[HashOutcome]:
        """`_hash` at low CPU and I/O priority (the legacy backlog's): on a thread of its own
        that ends with the batch, as a sweep's hashing (importd/priority.py)."""
        work = functools.partial(self.hasher.hash_batch, self.roots.paths(), to_hash)
        big = any(s.stat.size >= PIPELINE_FROM for s in to_hash)
        async with self._hash_limiter if big else self._small_limiter:
            return await anyio.to_thread.run_sync(run_lowered, work, abandon_on_cancel=True)

    async def _put_and_done(self, found: Identified) -> None:
        for op in found.ops:
            await self.writer.put(op)
        for key in found.done:
            self.scans.file_done(key)

    # ----- hash outcomes -> register ---------------------------------------------------------

    async def _record_outcomes(self, outcomes: list[HashOutcome], scan: Scan | None = None) -> None:
        """Hash outcomes to the catalog writer; files that changed meanwhile settle again (for
        `scan`, when given, which then waits for them)."""
        now = self.clock()
        debug = log.isEnabledFor(logging.DEBUG)
        hashed = [o for o in outcomes if type(o) is HashedFile]
        self.scans.counters.record_hashes(now, len(hashed), sum(o.stat.size for o in hashed))
        if (
            len(hashed) == len(outcomes)
            and not debug
            and all(o.ref.root_id in self.roots.by_id for o in hashed)
        ):
            # The usual batch: one hand-over. A walk's batches are a stream (bulk).
            await self.writer.put_many(list(hashed), bulk=scan is not None)
            if self.scans.waiting:
                for o in hashed:
                    self.scans.file_done((o.ref.root_id, o.ref.relpath))
            return
        for outcome in outcomes:
            key = (outcome.ref.root_id, outcome.ref.relpath)
            state = self.roots.get(key[0])
            if state is None:
                self.scans.file_done(key)
            elif isinstance(outcome, Unsettled):
                if scan is not None and not scan.done.is_set():
                    self.scans.expect(scan, key)
                await self._restat([key])
            elif isinstance(outcome, Vanished):
                await self._gone(state, key[1])
            else:
                self._log_outcome(state, outcome, debug)
                await self.writer.put(outcome)
                self.scans.file_done(key)

    def _log_outcome(self, state: RootState, outcome: HashedFile | FileFailure, debug: bool) -> None:
        path = display(outcome.ref.relpath)
        if isinstance(outcome, FileFailure):
            key = (outcome.ref.root_id, outcome.ref.relpath)
            again = self._warned.get(key) == outcome.reason
            if not again and len(self._warned) >= WARNED_FAILURES_MAX:
                self._warned.clear()
            self._warned[key] = outcome.reason
            log.log(
                logging.DEBUG if again else logging.WARNING,
                "%s/%s: %s",
                state.name,
                path,
                outcome.reason,
                extra={"root": state.name, "path": path},
            )
        elif debug and isinstance(outcome, HashedFile):
            extra = {"root": state.name, "path": path, "hash": outcome.blake3}
            log.debug("hashed %s/%s", state.name, path, extra=extra)

    async def _gone(self, state: RootState, relpath: bytes, subtree: bool = False) -> None:
        key = (state.root_id, relpath)
        self.tracker.forget(key)
        if self.roots.check_online(state):
            self.gone.add(state, relpath, subtree)  # to the writer a burst at a time (the brake)
        self.scans.file_done(key)


__all__ = ["Pipeline"]
