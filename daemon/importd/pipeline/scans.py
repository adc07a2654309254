"""Scans: reconcile requests, their runs in the catalog, cancellation, and the counters that
`importctl status` shows.

A scan walks a root (or a folder of it), compares the walk with the catalog's rows read in path
order beside it (neither side is ever held whole), hands changed files on in batches (`HandOn`,
supplied by the wiring), marks what vanished, waits for its files to be registered and mapped,
and records the run. It learns what became of its files through `file_done`, and of commits
through `count_committed`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from importctl.protocol import TERMINAL_STATES, ScanReply, iso_utc
from importd.catalog import roots as catalog_roots
from importd.catalog import runs as catalog_runs
from importd.catalog.engine import shrink_cache
from importd.catalog.entities import MappingOutcome
from importd.catalog.writer import BatchResult, CatalogWriter
from importd.items import KnownRows, VanishedRows
from importd.paths import display
from importd.pipeline.reconcile import ReconcileDiff, StreamComparer, WalkedFile, walk_listings
from importd.pipeline.roots import Roots, RootState, folder_has_entries
from importd.runtime import collector_paused, release_memory

log = logging.getLogger("importd.pipeline")

Key = tuple[int, bytes]
RATE_WINDOW_S = 10.0
# Changed files a walk hands on at a time.
WALK_BATCH_FILES = 1024
# How long a start-up walk waits for the root's watcher to be in place (it walks the tree too).
WATCH_SETTLE_WAIT_S = 30.0
RELEASE_MEMORY_AFTER = 20_000
KEEP_FINISHED_SCANS = 200


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

    def to_wire(self, root_name: str) -> ScanReply:
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
            "started": iso_utc(self.started),
            "finished": iso_utc(self.finished),
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


# What a scan is handed by the rest of the pipeline.
HandOn = Callable[[RootState, Scan, list[WalkedFile]], None]
"""In the walk's thread: a batch of changed files, to settle or to identify and hash."""
WalkRoot = Callable[[RootState, Scan, KnownRows], "ReconcileDiff | None"]
OpenKnownRows = Callable[[int, bytes | None], KnownRows]
OnLinks = Callable[[int, list[bytes], bool], Awaitable[None]]


def is_under(relpath: bytes, prefix: bytes) -> bool:
    return relpath == prefix or relpath.startswith(prefix + b"/")


def walk_in_batches(
    state: RootState,
    scan: Scan,
    known: KnownRows,
    hand_on: HandOn,
    stopping: threading.Event,
) -> ReconcileDiff | None:
    """The walk itself (in a worker thread): listings are compared with the catalog's rows as they
    are read, a folder at a time, and changed files handed on in batches. None when the walk was
    cut short (cancelled, or the daemon stopping): an unfinished walk proves nothing vanished."""
    batch: list[WalkedFile] = []
    comparer = StreamComparer(known, state.config.ignore)
    try:
        for listing in walk_listings(state.raw_path, scan.prefix, state.config.ignore):
            if stopping.is_set() or scan.cancelled:
                return None
            batch += comparer.feed(listing)
            if len(batch) >= WALK_BATCH_FILES:
                hand_on(state, scan, batch)
                batch = []
            scan.files_seen = comparer.diff.seen
        batch += comparer.finish()
        if stopping.is_set() or scan.cancelled:
            return None
        if batch:
            hand_on(state, scan, batch)
        return comparer.diff
    finally:
        known.close()


class Scans:
    """Every scan the daemon knows (the running ones and up to 200 finished), run one root walk
    at a time (a folder the watcher saw appear runs beside them)."""

    def __init__(
        self,
        roots: Roots,
        writer: CatalogWriter,
        walk: WalkRoot,
        known_rows: OpenKnownRows,
        drain_mapping: Callable[[], Awaitable[None]],
        gap_report: Callable[[], Mapping[str, Any]],
        stopping: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.roots = roots
        self.by_id: dict[int, Scan] = {}
        self.last: Scan | None = None
        # Per root, the last scan that failed, until a later scan of that root (or of the same
        # folder, or above it) ends without failing: `status` warns of it.
        self.failed: dict[int, Scan] = {}
        self.counters = Counters()
        # Set by the service: records the symlinks a walk met (maintenance owns them).
        self.on_links: OnLinks | None = None
        # Told of every change of a scan's state (the event bus's `run` topic).
        self.listeners: list[Callable[[Scan], None]] = []
        self._writer = writer
        self._walk = walk
        self._known_rows = known_rows
        self._drain_mapping = drain_mapping
        self._gap_report = gap_report
        self._stopping = stopping
        self._clock = clock
        self._seq = 0
        self._waiting: list[Scan] = []
        self._tg: TaskGroup | None = None
        self._subtree_limiter = anyio.CapacityLimiter(2)
        self._send: MemoryObjectSendStream[Scan]
        self._recv: MemoryObjectReceiveStream[Scan]
        self._send, self._recv = anyio.create_memory_object_stream[Scan](1024)

    async def run(self, tg: TaskGroup) -> None:
        """Runs the queued whole-root scans one after the other."""
        self._tg = tg
        async with self._recv:
            async for scan in self._recv:
                await self._run(scan)

    def close(self) -> None:
        """No more requests: `run` ends once the queued scans have run."""
        self._send.close()

    # ----- requests ------------------------------------------------------------------------

    async def request(self, root_id: int, prefix: bytes, trigger: str) -> Scan:
        self._seq += 1
        scan = Scan(self._seq, root_id, prefix, trigger)
        self.by_id[scan.scan_id] = scan
        if len(self.by_id) > KEEP_FINISHED_SCANS:
            for old in sorted(self.by_id)[:-KEEP_FINISHED_SCANS]:
                if self.by_id[old].done.is_set():
                    del self.by_id[old]
        if prefix and self._tg is not None:
            # A folder the watcher saw appear: small, so it does not wait behind a full walk.
            self._tg.start_soon(self._run_subtree, scan)
        else:
            await self._send.send(scan)
        return scan

    async def _run_subtree(self, scan: Scan) -> None:
        async with self._subtree_limiter:
            await self._run(scan)

    def cancel(self, scan: Scan) -> bool:
        if scan.state in TERMINAL_STATES:
            return False
        scan.cancelled = True
        if scan.state == "queued":
            scan.state = "cancelled"
        scan.pending.clear()
        scan.done.set()
        return True

    # ----- the files a scan waits for ------------------------------------------------------

    def expect(self, scan: Scan, key: Key) -> None:
        """`scan` waits for this file (handed on, or back to settling) until `file_done`."""
        if not scan.pending and scan not in self._waiting:
            self._waiting.append(scan)
        scan.pending.add(key)

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def file_done(self, key: Key) -> None:
        # Only scans still waiting for files: the registry keeps up to 200 finished ones.
        for scan in self._waiting:
            if key in scan.pending:
                scan.pending.discard(key)
                if not scan.pending and scan.walk_done:
                    scan.done.set()
        if self._waiting and any(s.done.is_set() or not s.pending for s in self._waiting):
            self._waiting = [s for s in self._waiting if s.pending and not s.done.is_set()]

    # ----- counting ------------------------------------------------------------------------

    def active(self) -> dict[int, Scan]:
        """The running full-root scan of each root, which committed changes are counted to."""
        active: dict[int, Scan] = {}
        for scan in self.by_id.values():
            if scan.state in ("scanning", "importing", "mapping") and (
                scan.root_id not in active or not scan.prefix
            ):
                active[scan.root_id] = scan
        return active

    def active_run_ids(self) -> dict[int, int | None]:
        return {rid: scan.run_id for rid, scan in self.active().items()}

    def count_committed(self, result: BatchResult) -> None:
        c = self.counters
        c.registered += result.inserted + result.revived
        c.moved += result.moved
        c.vanished += result.vanished
        c.errors += result.errors
        active = self.active()
        for change in result.changes:
            scan = active.get(change.root_id)
            if scan is not None:
                if change.kind in ("new", "revived", "moved", "updated"):
                    scan.files_registered += 1
                elif change.kind == "error":
                    scan.errors += 1
                scan.duplicates += change.duplicate

    def count_mapped(self, outcome: MappingOutcome) -> None:
        by_run = {scan.run_id: scan for scan in self.by_id.values() if scan.run_id is not None}
        for run_id, n in outcome.created.items():
            if run_id in by_run:
                by_run[run_id].entities_created += n
        for run_id, n in outcome.updated.items():
            if run_id in by_run:
                by_run[run_id].entities_updated += n

    def _changed(self, scan: Scan) -> None:
        for listener in self.listeners:
            listener(scan)

    # ----- one scan ------------------------------------------------------------------------

    async def _run(self, scan: Scan) -> None:
        state = self.roots.get(scan.root_id)
        if state is None:
            self._skip(scan, "root no longer configured")
            return
        if not self.roots.check_online(state):
            self._skip(scan, f"root offline: {state.watch_error}")
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
        scan.started = self._clock()
        scan.state = "scanning"
        state.scanning += 1
        state.state = "scanning"
        # A folder the watcher saw appear is part of the live stream, not a run of its own:
        # copying 300 folders in must not bury the operator's runs under 300 rows.
        if scan.trigger != "watch":
            started, where = scan.started, display(scan.prefix) or None
            scan.run_id = await self._writer.call(
                lambda c: catalog_runs.start_run(
                    c, self._writer.host, "reconcile", scan.trigger, scan.root_id, where, started
                )
            )
        self._changed(scan)
        try:
            await self._reconcile(state, scan)
        except Exception as exc:
            scan.state, scan.message = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("reconcile of %s failed", state.name, extra={"root": state.name})
        finally:
            await self._finish(state, scan)
            if first_import:
                self.roots.watch_after_import(state, self._stopping.is_set())

    def _walk_root(self, state: RootState, scan: Scan) -> ReconcileDiff | None:
        """In the walk's thread (which closes the catalog read whatever happens)."""
        return self._walk(state, scan, self._known_rows(scan.root_id, scan.prefix or None))

    def _skip(self, scan: Scan, why: str) -> None:
        scan.state, scan.message = "skipped", why
        scan.done.set()

    async def _reconcile(self, state: RootState, scan: Scan) -> None:
        """Walk, then wait for what the walk handed on to be registered, then mapped."""
        # The catalog's rows are read beside the walk (on SQLite by a thread of their own): each
        # takes about as long as `find` on a restart, and the walk's syscalls run without the GIL.
        # The walk of a whole root (nearly all of a cold import's work) runs without the cyclic
        # collector; not what follows, which may wait long for files still being written.
        paused = collector_paused() if not scan.prefix else contextlib.nullcontext()
        with paused:
            walked = await anyio.to_thread.run_sync(self._walk_root, state, scan, abandon_on_cancel=True)
        if walked is None or scan.cancelled:
            scan.state = "cancelled"  # an unfinished walk proves nothing vanished
            return
        diff = walked
        if not self.roots.check_online(state):
            # The mount went away during the walk: what looked gone is not gone.
            scan.state = "failed"
            scan.message = f"root went offline during the walk: {state.watch_error}"
            return
        if not scan.prefix and diff.seen:
            state.folder_had_files = True
        elif (
            not scan.prefix
            and not state.folder_had_files
            and diff.vanished
            and not diff.errors
            and not await anyio.to_thread.run_sync(folder_has_entries, state.raw_path)
        ):
            # A bare mount point, not a root whose every file was deleted at once.
            self.roots.set_empty(state)
            scan.state = "skipped"
            scan.message = f"root offline: {state.watch_error}"
            return
        # Put even when nothing vanished: a walk that found held files again ends their hold.
        walk_started = scan.started or 0.0
        await self._writer.put(VanishedRows(scan.root_id, tuple(diff.vanished), walk_started, scan.prefix))
        scan.vanished = len(diff.vanished)
        scan.errors += len(diff.errors)
        if self.on_links is not None:
            await self.on_links(scan.root_id, [link.relpath for link in diff.links], not scan.prefix)
        logged = {(err.relpath, err.reason) for err in state.walk_errors}
        if not scan.prefix:
            state.walk_errors = diff.errors
        else:
            # A folder's walk answers for that folder: its old errors go, its new ones come.
            state.walk_errors = [
                err for err in state.walk_errors if not is_under(err.relpath, scan.prefix)
            ] + diff.errors
        for err in diff.errors:
            # Once in the log; `importctl errors` lists it while it lasts.
            log.log(
                logging.DEBUG if (err.relpath, err.reason) in logged else logging.WARNING,
                "cannot read %s: %s",
                display(err.relpath) or ".",
                err.reason,
                extra={"root": state.name, "path": display(err.relpath)},
            )
        scan.walk_done = True
        scan.state = "importing"
        self._changed(scan)
        if not scan.pending:
            scan.done.set()
        await scan.done.wait()
        await self._writer.flush()
        if scan.cancelled:
            scan.state = "cancelled"
            return
        scan.state = "mapping"
        self._changed(scan)
        await self._drain_mapping()
        if scan.cancelled:  # asked while its files were being mapped: honour it
            scan.state = "cancelled"
            return
        if not scan.prefix and not diff.errors:
            started = scan.started or 0.0
            await self._writer.call(lambda c: catalog_roots.mark_reconciled(c, scan.root_id, started))
        scan.state = "partial" if scan.errors else "completed"

    async def _finish(self, state: RootState, scan: Scan) -> None:
        if scan.cancelled and scan.state in ("completed", "partial"):
            scan.state = "cancelled"  # the operator was told it would be
        scan.finished = self._clock()
        scan.walk_done = True
        scan.done.set()
        state.scanning -= 1
        if state.state == "scanning" and state.scanning == 0:
            state.state = "polling" if state.polling else "watching"
        self.last = scan
        if scan.state == "failed":
            self.failed[scan.root_id] = scan
        elif scan.state in ("completed", "partial"):
            failed = self.failed.get(scan.root_id)
            if failed is not None and (
                not scan.prefix
                or failed.prefix == scan.prefix
                or failed.prefix.startswith(scan.prefix + b"/")
            ):
                del self.failed[scan.root_id]
        if not scan.prefix:
            state.last_full_scan = scan.finished
        if scan.files_seen >= RELEASE_MEMORY_AFTER:
            if scan.changed >= RELEASE_MEMORY_AFTER:
                with anyio.CancelScope(shield=True):
                    await self._writer.call(shrink_cache)  # its pages, to malloc
            release_memory()
        self._changed(scan)
        run_id = scan.run_id
        if run_id is not None:
            values = self._run_values(scan)
            with anyio.CancelScope(shield=True):
                await self._writer.call(lambda c: catalog_runs.finish_run(c, run_id, values))
        log.info(
            "reconcile %s%s: %s, %d files seen, %d changed, %d vanished, %d unreadable, %.2fs",
            state.name,
            "/" + display(scan.prefix) if scan.prefix else "",
            scan.state,
            scan.files_seen,
            scan.changed,
            scan.vanished,
            scan.errors,
            (scan.finished or 0) - (scan.started or 0),
            extra={"root": state.name},
        )

    def _run_values(self, scan: Scan) -> dict[str, Any]:
        return {
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
            "gap_report": json.dumps(self._gap_report(), ensure_ascii=True),
        }


__all__ = ["Counters", "HandOn", "Scan", "Scans", "walk_in_batches"]
