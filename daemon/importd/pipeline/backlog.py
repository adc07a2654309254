"""The legacy backlog: old catalog rows whose files were on disk but not catalogued when the
migration was committed, hashed in the background and then linked.

It feeds the pipeline's own identify -> hash -> register line (no hasher of its own), a small
batch at a time, and only while the live line is idle: before each batch it waits until nothing
is settling or hashing (the watcher's changes, a walk), so a live change waits at most for the
one batch in hand (BATCH_FILES files, BATCH_BYTES bytes), which is hashed at low CPU and I/O
priority (the wiring hands it the hasher on a lowered thread, as a sweep's). Its state is in the catalog
(`legacy_backlog`, `backlog_control`), so a restart resumes where it was, paused if it was.

Per row: gone -> `missing`; unreadable -> `failed` (the file's row is in error, as any other);
changed while read -> tried again later (three times, then `failed`); hashed and registered ->
linked (its values and tags on the file, its attributes to the file's entity), and a BLAKE3 the
old catalog held that differs is logged `stale` in the row's run (the file's real hash wins).
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importctl.protocol import MigrationStatus
from importd.catalog import legacy as catalog_legacy
from importd.catalog.writer import CatalogWriter
from importd.entities import GapEvent
from importd.items import FileFailure, FileRef, FileStat, HashedFile, HashOutcome, SettledFile, Unsettled

log = logging.getLogger("importd.backlog")

BATCH_FILES = 64
BATCH_BYTES = 64 << 20  # the live line's own batch bound (wiring.HASH_BATCH_BYTES)
IDLE_POLL_S = 0.05
MAX_TRIES = 3
RATE_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class BacklogLine:
    """The pipeline's stages the backlog feeds: identify (returns what needs hashing), hash, and
    register (hash outcomes to the writer)."""

    identify: Callable[[list[SettledFile]], Awaitable[list[SettledFile]]]
    hash: Callable[[list[SettledFile]], Awaitable[list[HashOutcome]]]
    record: Callable[[list[HashOutcome]], Awaitable[None]]


def _lstat_all(paths: Sequence[bytes]) -> list[os.stat_result | None]:
    out: list[os.stat_result | None] = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            out.append(None)
            continue
        out.append(st if stat_mod.S_ISREG(st.st_mode) else None)
    return out


class LegacyBacklog:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: CatalogWriter,
        line: BacklogLine,
        *,
        live_busy: Callable[[], bool],
        roots: Callable[[], dict[int, tuple[str, bytes]]],
        emit: Callable[[list[GapEvent]], None],
        drain_mapping: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.line = line
        self.live_busy = live_busy
        self.roots = roots
        self.emit = emit
        self.drain_mapping = drain_mapping
        self.clock = clock
        self.paused = False
        self.counts = dict.fromkeys(catalog_legacy.BACKLOG_STATES, 0)
        self._wake = anyio.Event()
        self._tries: dict[int, int] = {}
        self._settled: deque[tuple[float, int]] = deque()  # (when, rows) for the rate

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            self.paused = await conn.run_sync(catalog_legacy.is_paused)
            self.counts = await conn.run_sync(catalog_legacy.backlog_counts, self.writer.host)

    def status(self) -> MigrationStatus:
        now = time.monotonic()
        while self._settled and self._settled[0][0] < now - RATE_WINDOW_S:
            self._settled.popleft()
        rate = sum(n for _, n in self._settled) / RATE_WINDOW_S
        c = self.counts
        state = "paused" if self.paused else "running" if c["pending"] else "done"
        return {
            "state": state,
            "pending": c["pending"],
            "done": c["done"],
            "missing": c["missing"],
            "failed": c["failed"],
            "rate_per_s": round(rate, 2),
        }

    async def set_paused(self, paused: bool) -> None:
        now = self.clock()
        await self.writer.call(lambda c: catalog_legacy.set_paused(c, paused, now))
        self.paused = paused
        self.wake()

    async def refresh(self) -> None:
        """After a migration added rows."""
        async with self.engine.connect() as conn:
            self.counts = await conn.run_sync(catalog_legacy.backlog_counts, self.writer.host)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            if self.paused or not self.counts["pending"]:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if self.live_busy():
                with anyio.move_on_after(IDLE_POLL_S):
                    await self._wake.wait()
                    self._wake = anyio.Event()
                continue
            async with self.engine.connect() as conn:
                rows = await conn.run_sync(catalog_legacy.pending, self.writer.host, BATCH_FILES)
            if not rows:
                await self.refresh()
                continue
            try:
                await self._one_batch(rows)
            except Exception:
                log.exception("the legacy backlog failed on a batch; retrying in a moment")
                await anyio.sleep(5)

    async def _one_batch(self, rows: list[catalog_legacy.Pending]) -> None:
        started = time.monotonic()
        roots = self.roots()
        outcomes: list[tuple[int, str, str | None]] = []
        present = [r for r in rows if r.root_id in roots]
        for r in rows:
            if r.root_id not in roots:
                outcomes.append((r.id, "failed", "its root is no longer configured"))
        stats = await anyio.to_thread.run_sync(
            _lstat_all, [roots[r.root_id][1] + b"/" + r.relpath for r in present]
        )
        settled: list[tuple[catalog_legacy.Pending, SettledFile]] = []
        total = 0
        for r, st in zip(present, stats, strict=True):
            if st is None:
                outcomes.append((r.id, "missing", "no file there"))
            elif total < BATCH_BYTES or not settled:
                total += st.st_size
                settled.append(
                    (r, SettledFile(FileRef(r.root_id, roots[r.root_id][0], r.relpath), FileStat.of(st)))
                )
        to_hash = await self.line.identify([s for _, s in settled]) if settled else []
        hashed = await self.line.hash(to_hash) if to_hash else []
        by_key = {(o.ref.root_id, o.ref.relpath): o for o in hashed}
        await self.line.record([o for o in hashed if isinstance(o, HashedFile | FileFailure)])
        await self.writer.flush()
        await self.drain_mapping()  # the files' entity links, for the attributes
        linked: list[catalog_legacy.Pending] = []
        for r, _ in settled:
            outcome = by_key.get((r.root_id, r.relpath))
            if isinstance(outcome, FileFailure):
                outcomes.append((r.id, "failed", outcome.reason))
            elif isinstance(outcome, Unsettled) or (
                outcome is not None and not isinstance(outcome, HashedFile)
            ):
                tries = self._tries.get(r.id, 0) + 1
                self._tries[r.id] = tries
                if tries >= MAX_TRIES:
                    outcomes.append((r.id, "failed", "the file kept changing while it was read"))
            else:
                linked.append(r)
        now = self.clock()
        last_try = {r.id for r in linked if self._tries.get(r.id, 0) + 1 >= MAX_TRIES}

        def write(c: Connection) -> tuple[list[tuple[int, str, str | None]], list[GapEvent]]:
            # Linking and leaving `pending` in one transaction: a crash between them would
            # link a row twice.
            done, events = _link_registered(c, linked, now)
            registered = {bid for bid, _, _ in done}
            gave_up: list[tuple[int, str, str | None]] = [
                (r.id, "failed", "the file could not be registered")
                for r in linked
                if r.id not in registered and r.id in last_try
            ]
            catalog_legacy.settle(c, outcomes + done + gave_up, now)
            return outcomes + done + gave_up, events

        outcomes, events = await self.writer.call(write)
        left = {bid for bid, _, _ in outcomes}
        for r in linked:
            if r.id not in left:  # not registered (yet): tried again, a few times
                self._tries[r.id] = self._tries.get(r.id, 0) + 1
        self.emit(events)
        for bid, state, _ in outcomes:
            self._tries.pop(bid, None)
            self.counts[state] += 1
            self.counts["pending"] -= 1
        self._settled.append((time.monotonic(), len(outcomes)))
        log.debug(
            "legacy backlog: %d rows settled in %.3f s (%d hashed)",
            len(outcomes),
            time.monotonic() - started,
            len(hashed),
        )
        if not outcomes:  # everything changed while read: let it settle before the next try
            await anyio.sleep(IDLE_POLL_S)


def _link_registered(
    conn: Connection, rows: Sequence[catalog_legacy.Pending], now: float
) -> tuple[list[tuple[int, str, str | None]], list[GapEvent]]:
    """Link the rows whose files are registered now; a row whose file has no live row with a
    hash stays pending (it will be tried again)."""
    known = catalog_legacy.known_at_paths(conn, [(r.root_id, r.relpath) for r in rows])
    outcomes: list[tuple[int, str, str | None]] = []
    events: list[GapEvent] = []
    for r in rows:
        found = known.get((r.root_id, r.relpath))
        if found is None or found.blake3 is None:
            continue
        old = r.record.get("blake3")
        link = catalog_legacy.Link((found.file_id,), r.legacy_id, r.record)
        source = str(r.record.get("source") or f"legacy run {r.run_id}")
        events += catalog_legacy.link(conn, [link], source, r.run_id, now)
        if old and old != found.blake3:
            detail = f"row {r.legacy_id}: the old catalog says {old}, the file is {found.blake3}"
            catalog_legacy.log_lines(conn, r.run_id, [("stale", detail)], now)
        outcomes.append((r.id, "done", None))
    return outcomes, events


__all__ = ["BacklogLine", "LegacyBacklog"]
