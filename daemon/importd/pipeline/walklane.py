"""The walk's fast lane: the same stages as the watcher's files (settle, identify, hash), taken a
batch at a time in the walk's own thread.

A file whose ctime is already `settle_seconds` old is settled (every write and every metadata
change sets ctime, and nothing sets it back), so a walk needs no settle tracker for it: it is
identified, hashed and handed to the writer right here, with no trip per file through the event
loop. That is nearly every file of a cold import. The younger ones go to the settle tracker like
the watcher's. On SQLite the lane asks the catalog about inodes on a read-only connection of its
own; elsewhere through the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.engine import open_reader, sqlite_file
from importd.items import FileRef, HashOutcome, KnownRows, SettledFile
from importd.pipeline.hasher import BatchHasher, hash_walked
from importd.pipeline.identify import Identified, InodeLookup, OnDisk, identify, reader_lookup
from importd.pipeline.reconcile import ReconcileDiff, WalkedFile
from importd.pipeline.roots import RootState
from importd.pipeline.scans import Scan, walk_in_batches
from importd.threads import thread_named


@dataclass(frozen=True)
class LaneExits:
    """Where the lane hands its files on (coroutines, run on the event loop)."""

    settle: Callable[[RootState, Scan, list[WalkedFile]], Coroutine[object, object, None]]
    """Files still young: to the settle tracker, `scan` waiting for each."""
    identify: Callable[[list[SettledFile]], Coroutine[object, object, list[SettledFile]]]
    """Without a reader of its own: the event loop identifies them; returns those to hash."""
    identified: Callable[[Identified], Coroutine[object, object, None]]
    """Moves and hard links (no hash needed), and files that are unchanged."""
    record: Callable[[list[HashOutcome], Scan], Coroutine[object, object, None]]
    """Hash outcomes, to the writer (a file that changed meanwhile settles again)."""


def split_by_age(batch: list[WalkedFile], still_since_ns: int) -> tuple[list[WalkedFile], list[WalkedFile]]:
    """(young, settled): settled files have not changed since `still_since_ns` (ctime)."""
    young = [item for item in batch if item.ctime_ns > still_since_ns]
    if not young:
        return young, batch
    return young, [item for item in batch if item.ctime_ns <= still_since_ns]


class WalkLane:
    def __init__(
        self,
        engine: AsyncEngine,
        exits: LaneExits,
        hasher: BatchHasher,
        on_disk: OnDisk,
        settle_seconds: Callable[[], float],
        stopping: threading.Event,
        clock: Callable[[], float] = time.time,
        host: str = "",
    ) -> None:
        self.hashing = 0  # files in the lane's hands now (`importctl status` queue)
        self._engine = engine
        self._exits = exits
        self._hasher = hasher
        self._on_disk = on_disk
        self._settle_seconds = settle_seconds
        self._stopping = stopping
        self._clock = clock
        self._host = host  # inode lookups see this server's rows only

    def walk(self, state: RootState, scan: Scan, known: KnownRows) -> ReconcileDiff | None:
        """A scan's walk, in a worker thread, its changed files through the lane."""
        db_file = sqlite_file(self._engine)
        reader = open_reader(db_file) if db_file is not None else None
        lookup = reader_lookup(reader, self._host) if reader is not None else None
        try:
            with thread_named("importd-walk"):
                return walk_in_batches(
                    state, scan, known, lambda st, sc, batch: self.take(st, sc, batch, lookup), self._stopping
                )
        finally:
            if reader is not None:
                reader.close()

    def take(self, state: RootState, scan: Scan, batch: list[WalkedFile], lookup: InodeLookup | None) -> None:
        """One batch of a walk's changed files, in the walk's thread."""
        still_since = int((self._clock() - self._settle_seconds()) * 1e9)
        young, settled = split_by_age(batch, still_since)
        if young:
            anyio.from_thread.run(self._exits.settle, state, scan, young)
        if not settled:
            return
        scan.changed += len(settled)
        self.hashing += len(settled)
        try:
            outcomes = self._identify_and_hash(state, settled, lookup)
            if outcomes:
                anyio.from_thread.run(self._exits.record, outcomes, scan)
        finally:
            self.hashing -= len(settled)

    def _identify_and_hash(
        self, state: RootState, walked: list[WalkedFile], lookup: InodeLookup | None
    ) -> list[HashOutcome]:
        # Signatures hold inode and dev as the catalog does (signed).
        matches = lookup([(w.signature[3], w.signature[2]) for w in walked]) if lookup is not None else None
        if matches == []:  # no row knows these inodes (a cold import): hash them all, in C
            return hash_walked(state.root_id, state.name, state.raw_path, walked, self._stopping)
        settled = [SettledFile(FileRef(state.root_id, state.name, w.relpath), w.stat) for w in walked]
        if matches is None:
            to_hash = anyio.from_thread.run(self._exits.identify, settled)
        else:
            found = identify(settled, matches, self._on_disk)
            if found.ops or found.done:
                anyio.from_thread.run(self._exits.identified, found)
            to_hash = found.to_hash
        if not to_hash or self._stopping.is_set():
            return []
        return self._hasher.hash_batch({state.root_id: state.raw_path}, to_hash)
