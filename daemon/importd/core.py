"""The daemon as the API sees it: a narrow core the service builds and every handler calls.

Handlers never reach into the pipeline's objects; what they may ask is here (roots and their
states, the figures `status` shows, targets, scans and runs in progress, the live gap report,
conflicts, media, maintenance, the engine for reads). This is the one module that knows how the
pipeline keeps those, so a change inside the pipeline is adapted here and nowhere else.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importctl.protocol import (
    Completeness,
    MaintenanceStatus,
    MediaStatus,
    MigrationStatus,
    QueueStatus,
    ScanReply,
    StatusCounters,
    iso_utc,
)
from importd.catalog import files as catalog_files
from importd.catalog.entities import Resolved, ResolveError, load_states, resolve_conflict_tx
from importd.catalog.writer import FileChange
from importd.entities import (
    EntityGaps,
    Expectations,
    FieldRules,
    GapChange,
    GapEvent,
    GapReport,
    RuleSet,
    compute_report,
)
from importd.imports.legacy import LegacyMapping, MappingError
from importd.items import ConfirmHeld
from importd.pipeline.legacy_migration import MigrationResult, migrate
from importd.pipeline.reconcile import WalkError
from importd.pipeline.roots import FOLDER_CHANGE_NOTICE_S
from importd.targets import Place, RootPlace, TargetError, resolve_path, resolve_target

if TYPE_CHECKING:
    from importd.config import IgnoreRules, MediaConfig
    from importd.maintenance.operations import Maintenance
    from importd.pipeline.enrichment import Enricher
    from importd.pipeline.extract import MediaStage
    from importd.pipeline.scans import Scan
    from importd.pipeline.wiring import Pipeline


T = TypeVar("T")
LOCKED = "locked by another process: writes wait and are retried until it lets go"


@dataclass(frozen=True, slots=True)
class RootView:
    """One configured root and its state right now."""

    root_id: int
    name: str
    path: str  # as configured
    raw_path: bytes
    state: str  # watching | polling | offline | scanning | held
    watch: str  # inotify | poll
    watch_error: str | None
    walk_errors: tuple[WalkError, ...]  # folders the last walk could not read
    held: int = 0  # files a mass disappearance would have marked missing, held

    def absolute(self, relpath: bytes) -> bytes:
        return self.raw_path + b"/" + relpath if relpath else self.raw_path


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """`found` False: no such run in progress; `cancelled` False: it had already ended (`state`)."""

    found: bool
    cancelled: bool
    state: str = ""


def _shown_state(state: str) -> str:
    return state if state != "starting" else "scanning"


class Core:
    def __init__(
        self,
        pipeline: Pipeline,
        maintenance: Maintenance,
        engine: AsyncEngine,
        *,
        version: str,
        catalog: str,
        started_monotonic: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pipeline = pipeline
        self.maintenance = maintenance
        self.engine = engine
        self.version = version
        self.catalog = catalog  # the catalog URL, password redacted
        self._started = started_monotonic
        self._clock = clock
        self._migrating = False  # a legacy migration is being committed
        self.enricher: Enricher | None = None  # [enrich]: set by the service when configured

    # ----- the daemon ------------------------------------------------------------------------

    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def pid(self) -> int:
        return os.getpid()

    @property
    def host(self) -> str:
        """This server's name in the catalog (its roots are this host's)."""
        return self._pipeline.writer.host

    # ----- roots and targets -----------------------------------------------------------------

    def roots(self) -> list[RootView]:
        held = self._pipeline.writer.held
        return [
            RootView(
                root_id=rid,
                name=st.config.name,
                path=str(st.config.path),
                raw_path=st.raw_path,
                # Offline first: an unmounted root's hold waits for it to be back.
                state="held" if held.get(rid) and st.state != "offline" else _shown_state(st.state),
                watch=st.config.watch,
                watch_error=st.watch_error,
                walk_errors=tuple(st.walk_errors),
                held=held.get(rid, 0),
            )
            for rid, st in self._pipeline.roots.by_id.items()
        ]

    async def confirm_held(self, root_id: int) -> int:
        """Apply a root's hold (its held rows become missing); returns how many were held (0:
        nothing was)."""
        writer = self._pipeline.writer
        held = writer.held.get(root_id, 0)
        if held:
            await writer.put(ConfirmHeld(root_id))
            await writer.flush()
        return held

    def root_setup(self, root_id: int) -> tuple[IgnoreRules, RuleSet | None, Expectations] | None:
        """A root's ignore rules and rule set, and the expectations: what a preview needs."""
        state = self._pipeline.roots.get(root_id)
        if state is None:
            return None
        return state.config.ignore, state.config.rule_set, self._pipeline.mapper.live.expectations

    def places(self) -> list[RootPlace]:
        return self._pipeline.roots.places()

    def resolve(self, target: str | None) -> list[Place] | TargetError:
        """`scan`'s ROOT or PATH (see `importd.targets`)."""
        return resolve_target(target, self.places())

    def locate(self, text: str, cwd: str | None) -> Place | TargetError:
        """`find`'s and `info`'s PATH, absolute or relative to the client's directory."""
        return resolve_path(text, self.places(), cwd)

    # ----- what `status` shows ---------------------------------------------------------------

    def stage_warnings(self) -> list[str]:
        """Stages that are failing right now (root watchers aside: they are in `roots`), and a
        root folder replaced under its path lately (swapped: watched anew, but an operator
        should know the folder they configured is not the one it was)."""
        out = []
        now = self._clock()
        for root in self._pipeline.roots.by_id.values():
            if root.folder_changed and now - root.folder_changed < FOLDER_CHANGE_NOTICE_S:
                out.append(
                    f"{root.name}: the folder at {root.config.path} was replaced (moved or swapped) "
                    f"at {iso_utc(root.folder_changed)}: watched anew and reconciled"
                )
        if self._pipeline.mapper.last_error:
            out.append(f"entities: mapping failing: {self._pipeline.mapper.last_error}")
        if self._pipeline.writer.disk_full:
            out.append("catalog: the disk is full: writes wait until space returns")
        if self._pipeline.writer.locked:
            out.append(f"catalog: {LOCKED}")
        if self._pipeline.writer.last_error:
            out.append(f"catalog: writes failing, retrying: {self._pipeline.writer.last_error}")
        for root_id, scan in sorted(self._pipeline.scans.failed.items()):
            state = self._pipeline.roots.get(root_id)
            if state is None:
                continue
            where = f"{state.name}/{os.fsdecode(scan.prefix)}" if scan.prefix else state.name
            run = f"; importctl run {scan.run_id} has its log" if scan.run_id is not None else ""
            out.append(
                f"{where}: the last scan failed ({scan.message or 'no reason given'}): "
                f"`importctl scan {state.name}` tries again{run}"
            )
        return out

    def catalog_condition(self) -> tuple[str, float | None] | None:
        """Why catalog writes wait right now (a full disk, a lock another process holds, another
        failure that passes), and since when; None while they go through."""
        writer = self._pipeline.writer
        if writer.last_error is None:
            return None
        if writer.disk_full:
            why = "the disk is full: writes wait until space returns"
        elif writer.locked:
            why = LOCKED
        else:
            why = "writes failing, retrying"
        return f"{why} ({writer.last_error})", writer.failing_since

    def queue(self) -> QueueStatus:
        sizes = self._pipeline.queue_sizes()
        return {
            "settling": sizes["settling"],
            "hashing": sizes["hashing"],
            "writing": self._pipeline.writer.pending,
            "mapping": self._pipeline.mapper.pending,
        }

    def rates(self) -> tuple[float, float]:
        """Hashed files per second and MiB per second, over the last few seconds."""
        return self._pipeline.scans.counters.rates(self._clock())

    def counters(self) -> StatusCounters:
        c = self._pipeline.scans.counters
        return {
            "hashed_files": c.hashed_files,
            "hashed_bytes": c.hashed_bytes,
            "registered": c.registered,
            "moved": c.moved,
            "vanished": c.vanished,
            "errors": c.errors,
        }

    def last_scan(self) -> ScanReply | None:
        last = self._pipeline.scans.last
        return self._wire(last) if last is not None else None

    def completeness(self) -> Completeness:
        return cast(Completeness, self._pipeline.mapper.live.completeness().to_json())

    # ----- scans and runs --------------------------------------------------------------------

    async def request_scans(self, places: list[Place]) -> list[ScanReply]:
        scans = [await self._pipeline.request_scan(p.root_id, p.relpath, "manual") for p in places]
        return [self._wire(s) for s in scans]

    def scan(self, scan_id: int) -> ScanReply | None:
        found = self._pipeline.scans.by_id.get(scan_id)
        return self._wire(found) if found is not None else None

    def live_runs(self) -> dict[int, ScanReply]:
        """Scans that have a run row, by run id (their counts are ahead of the row's)."""
        return {s.run_id: self._wire(s) for s in self._pipeline.scans.by_id.values() if s.run_id is not None}

    def cancel(self, run_id: int) -> CancelOutcome:
        scans = self._pipeline.scans.by_id
        scan = next((s for s in scans.values() if s.run_id == run_id), None)
        if scan is None:
            # A queued scan has no run row yet: `importctl scan` printed its scan id.
            queued = scans.get(run_id)
            scan = queued if queued is not None and queued.run_id is None else None
        if scan is None:
            return CancelOutcome(found=False, cancelled=False)
        if not self._pipeline.scans.cancel(scan):
            return CancelOutcome(found=True, cancelled=False, state=scan.state)
        return CancelOutcome(found=True, cancelled=True, state=scan.state)

    def _wire(self, scan: Scan) -> ScanReply:
        state = self._pipeline.roots.get(scan.root_id)
        return scan.to_wire(state.name if state else "?")

    # ----- entities and gaps -----------------------------------------------------------------

    def gap_report(self) -> GapReport:
        return self._pipeline.mapper.live.report()

    def gap_report_of(self, entity_type: str, key: str) -> EntityGaps | None:
        """One entity's line of the live gap report (None: its type expects nothing of it)."""
        return self._pipeline.mapper.live.entity(entity_type, key)

    async def recomputed_gap_report(self, site: bool = False) -> GapReport:
        """The full recomputation from the catalog, to check the live report against; with
        `site`, of every server's files (the live report is this server's)."""
        async with self.engine.connect() as conn:
            states = await conn.run_sync(load_states, None if site else self.host)
        return compute_report(states, self._pipeline.mapper.live.expectations)

    async def resolve_conflict(self, conflict_id: int, action: str) -> Resolved | ResolveError:
        now = self._clock()
        try:
            done = await self._pipeline.writer.call(
                lambda c: resolve_conflict_tx(c, conflict_id, action, now)
            )
        except ResolveError as exc:
            return exc
        mapper = self._pipeline.mapper
        for event in done.events:
            mapper.emit(mapper.live.apply(event))
        return done

    # ----- forgetting ghosts -----------------------------------------------------------------

    async def forget(self, place: Place, *, undo: bool, dry_run: bool) -> list[catalog_files.GoneRow]:
        """`importctl forget`: the rows marked missing at or under `place` become forgotten (with
        `undo`, forgotten ones missing again), in one transaction of the single writer. The gap
        report then hears of it through the mapper's queue, behind the changes already queued,
        so a recomputation still gives the live report."""
        rows = await self._pipeline.writer.call(
            functools.partial(
                catalog_files.forget, root_id=place.root_id, relpath=place.relpath, undo=undo, dry_run=dry_run
            )
        )
        if rows and not dry_run:
            kind = "unforgotten" if undo else "forgotten"
            await self._pipeline.mapper.submit(
                [FileChange(r.row_id, place.root_id, r.relpath, kind) for r in rows]
            )
        return rows

    # ----- a legacy catalog's migration and its backlog ---------------------------------------

    async def migrate_legacy(
        self, db_path: str, mapping: LegacyMapping, *, commit: bool, limit: int
    ) -> MigrationResult | MappingError:
        pipeline = self._pipeline
        if commit and self._migrating:
            return MappingError(
                "a legacy migration is being committed already",
                "wait for it: importctl runs shows it",
                "busy",
            )
        self._migrating = self._migrating or commit
        try:
            result = await migrate(
                db_path,
                mapping,
                engine=self.engine,
                writer=pipeline.writer,
                roots=[(p.root_id, p.name, p.path) for p in self.places()],
                emit=pipeline.emit_gap_events,
                clock=self._clock,
                commit=commit,
                limit=limit,
            )
        finally:
            if commit:
                self._migrating = False
        if commit and not isinstance(result, MappingError):
            await pipeline.backlog.refresh()
        return result

    def migration_status(self) -> MigrationStatus:
        return self._pipeline.backlog.status()

    async def pause_migration(self, paused: bool) -> None:
        await self._pipeline.backlog.set_paused(paused)

    # ----- imports ---------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def field_rules(self) -> FieldRules:
        """The `[fields]` value rules as of the last reload."""
        return self._pipeline.config.fields

    async def write(self, tx: Callable[[Connection], T]) -> T:
        """One transaction of the single catalog writer (an import's batch, its run row)."""
        return await self._pipeline.writer.call(tx)

    def apply_gap_events(self, events: Sequence[GapEvent]) -> None:
        """Bring the live gap report up to date with what a write outside the mapper did."""
        mapper = self._pipeline.mapper
        changes: list[GapChange] = []
        for event in events:
            changes.extend(mapper.live.apply(event))
        mapper.emit(changes)  # once: a listener publishes what changed, per call

    # ----- media -----------------------------------------------------------------------------

    @property
    def media(self) -> MediaStage:
        return self._pipeline.media

    def media_config(self) -> MediaConfig:
        """The configuration's thresholds as of the last reload."""
        return self._pipeline.config.media

    def media_status(self) -> MediaStatus:
        return cast(MediaStatus, self._pipeline.media.status())

    # ----- maintenance -----------------------------------------------------------------------

    async def maintenance_status(self) -> MaintenanceStatus:
        return cast(MaintenanceStatus, await self.maintenance.status())


__all__ = ["CancelOutcome", "Core", "RootView"]
