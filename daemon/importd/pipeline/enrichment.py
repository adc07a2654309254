"""Enrichment runs: the daemon's own task, beside the line of registration stages.

A run (`importctl enrich`, or an automatic one after new entities were registered) reads the
entities of the provider's types, leaves out those already settled whose query is unchanged
(resumable by nature: no checkpoint, the catalog says where each entity stands), and hands the
rest to a few workers. Each worker asks the provider (every request through the one shared
limiter), scores the candidates and records the outcome in one short transaction of the single
writer, so the writer is never held for long and a crash loses at most the entities in flight
(their answers are in the response cache: a restarted run does not ask them again). A failure
is a value: an entity whose requests failed three times is skipped, with the reason in the
run's log, and asked again by the next run.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog import enrich as catalog
from importd.catalog.runs import finish_run, start_run
from importd.config import EnrichConfig
from importd.enrich.cache import ResponseCache
from importd.enrich.limiter import RateLimiter
from importd.enrich.provider import (
    Candidate,
    Kind,
    Provider,
    ProviderFailure,
    Trace,
    fingerprint,
    query_of,
)
from importd.enrich.scoring import decide, ranked
from importd.entities import GapEvent

log = logging.getLogger("importd.enrich")
T = TypeVar("T")
AUTOMATIC_QUIET_S = 2.0  # an automatic run waits for registrations to pause this long
MAX_ITEMS = 1000  # outcomes a job keeps for its reply (its counts count them all)
MAX_JOBS = 64
# The provider sees arrivals, not our starts: the window is widened by this much so jitter on
# the way cannot bring `limit + 1` arrivals within one window.
LIMITER_GUARD_S = 0.05
COUNTS = (
    "considered",
    "unchanged",
    "matched",
    "pending",
    "none",
    "skipped",
    "conflicts",
    "requests",
    "cached",
)


class Daemon(Protocol):
    """What enrichment needs of the daemon (the core gives it)."""

    engine: AsyncEngine

    @property
    def host(self) -> str:
        """This server's name in the catalog (its runs are its own)."""
        ...

    async def write(self, tx: Callable[[Connection], T]) -> T: ...

    def apply_gap_events(self, events: Sequence[GapEvent]) -> None: ...

    def now(self) -> float: ...


@dataclass
class Selection:
    entity_ids: tuple[int, ...] | None = None  # --entity (asked again even when settled)
    entity_type: str | None = None  # --type
    label: str = "all"


@dataclass
class Job:
    id: str
    selection: Selection
    dry_run: bool
    trigger: str
    state: str = "queued"  # queued | running | completed | failed
    run_id: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    items: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    started: float | None = None
    finished: float | None = None


@dataclass(frozen=True)
class Asked:
    settlement: catalog.Settlement
    trace: Trace
    title: str


def _candidate_json(scored_candidate: Candidate, confidence: float) -> dict[str, Any]:
    return {**scored_candidate.to_json(), "confidence": confidence}


class Enricher:
    def __init__(
        self,
        config: EnrichConfig,
        daemon: Daemon,
        *,
        provider_factory: Callable[[EnrichConfig, RateLimiter], Provider] | None = None,
    ) -> None:
        self.config = config
        self.daemon = daemon
        self._factory = provider_factory or _tmdb
        self.limiter = _limiter(config)
        self._provider: Provider | None = None
        self._stale: list[Provider] = []  # replaced by a reload while a run used them
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._send, self._recv = anyio.create_memory_object_stream[Job](MAX_JOBS)
        self._wake = anyio.Event()
        self._last_notice = 0.0

    # ----- configuration ---------------------------------------------------------------------

    def kinds(self) -> dict[str, Kind]:
        out: dict[str, Kind] = dict.fromkeys(self.config.movie_types, "movie")
        out.update(dict.fromkeys(self.config.tv_types, "tv"))
        return out

    async def reconfigure(self, config: EnrichConfig) -> None:
        """SIGHUP: the next request uses the new settings (a run in progress keeps its client)."""
        old, self.config = self.config, config
        if (old.rate_limit, old.rate_window_seconds) != (config.rate_limit, config.rate_window_seconds):
            self.limiter = _limiter(config)
        if old != config and self._provider is not None:
            stale, self._provider = self._provider, None
            if any(j.state == "running" for j in self.jobs.values()):
                self._stale.append(stale)  # its run's workers still use it: closed at the end
            else:
                await _close(stale)

    def redact(self, text: str) -> str:
        """`text` without the key (an exception's text, a traceback)."""
        secret = self.config.key.reveal()
        return text.replace(secret, "***") if secret else text

    def provider(self) -> Provider:
        if self._provider is None:
            self._provider = self._factory(self.config, self.limiter)
        return self._provider

    # ----- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._automatic)
                await self._serve(self._recv)
        finally:
            await self.aclose()

    async def _serve(self, jobs: MemoryObjectReceiveStream[Job]) -> None:
        async for job in jobs:
            try:
                await self._execute(job)
            except Exception as exc:  # a run's failure never stops the task, nor the daemon
                log.error("enrichment run failed: %s", self.redact(traceback.format_exc()))
                job.state, job.message = "failed", self.redact(f"{type(exc).__name__}: {exc}")
            finally:
                job.finished = job.finished or self.daemon.now()

    def request(self, selection: Selection, *, dry_run: bool, trigger: str = "manual") -> Job | None:
        """Queue a run; None when `MAX_JOBS` are queued already."""
        job = Job(uuid.uuid4().hex[:12], selection, dry_run, trigger)
        try:
            self._send.send_nowait(job)
        except anyio.WouldBlock:
            return None
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        return job

    def notice(self, changed: bool) -> None:
        """Files were registered: with `automatic`, a run follows once registrations pause."""
        if changed and self.config.automatic:
            self._last_notice = time.monotonic()
            self._wake.set()

    async def _automatic(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while time.monotonic() - self._last_notice < AUTOMATIC_QUIET_S:
                await anyio.sleep(AUTOMATIC_QUIET_S - (time.monotonic() - self._last_notice) + 0.01)
            if not self.config.automatic:
                continue
            if any(j.trigger == "automatic" and j.state == "queued" for j in self.jobs.values()):
                continue
            selection = Selection(label="new or changed entities")
            if self.request(selection, dry_run=False, trigger="automatic") is None:
                self._wake.set()  # the queue is full: try again after the next pause

    # ----- one run ---------------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        job.state, job.started = "running", self.daemon.now()
        kinds = self.kinds()
        types = [job.selection.entity_type] if job.selection.entity_type else sorted(kinds)
        types = [t for t in types if t in kinds]
        async with self.daemon.engine.connect() as conn:
            rows = await conn.run_sync(
                lambda c: catalog.entities_to_ask(c, types, self.config.order, job.selection.entity_ids)
            )
        forced = job.selection.entity_ids is not None
        todo = [r for r in rows if forced or _unsettled(r, kinds[r.type])]
        job.counts["unchanged"] = len(rows) - len(todo)
        if not job.dry_run:
            at = self.daemon.now()
            job.run_id = await self.daemon.write(
                lambda c: start_run(c, self.daemon.host, "enrich", job.trigger, None, job.selection.label, at)
            )
        status = "completed"
        try:
            send, recv = anyio.create_memory_object_stream[catalog.EntityToAsk](self.config.workers)
            async with anyio.create_task_group() as tg:
                for _ in range(self.config.workers):
                    tg.start_soon(self._worker, job, recv.clone(), kinds, tg.cancel_scope)
                recv.close()
                async with send:
                    for row in todo:
                        await send.send(row)
            if job.message:  # the provider refused the key: every request would fail alike
                status = "failed"
        except Exception as exc:
            status, job.message = "failed", job.message or f"{type(exc).__name__}: {exc}"
            raise
        except BaseException:
            status = "interrupted"  # the daemon is stopping
            raise
        finally:
            job.state = status
            job.finished = self.daemon.now()
            if job.run_id is not None:
                # Shielded, but bounded: a daemon that is stopping must not wait on it long (a run
                # left `running` is marked interrupted at the next start anyway).
                with anyio.move_on_after(2.0, shield=True):
                    await self._finish(job, status)

    async def _worker(
        self,
        job: Job,
        rows: MemoryObjectReceiveStream[catalog.EntityToAsk],
        kinds: Mapping[str, Kind],
        stop: CancelScope,
    ) -> None:
        async with rows:
            async for row in rows:
                asked = await self._ask(row, kinds[row.type])
                job.counts["considered"] += 1
                job.counts["requests"] += asked.trace.requests
                job.counts["cached"] += asked.trace.cached
                s = asked.settlement
                job.counts[s.state] += 1
                applied: list[str] = []
                if not job.dry_run:
                    now = self.daemon.now()
                    settled = await self.daemon.write(
                        functools.partial(catalog.settle, s=s, now=now, run_id=job.run_id)
                    )
                    self.daemon.apply_gap_events(settled.events)
                    applied = settled.applied
                    job.counts["conflicts"] += settled.conflicts
                elif s.state == "matched":
                    applied = sorted(k for k in s.values if k not in row.attributes)
                if len(job.items) < MAX_ITEMS:
                    job.items.append(
                        {
                            "entity": row.name,
                            "type": row.type,
                            "outcome": s.state,
                            "provider_id": s.provider_id,
                            "confidence": s.confidence,
                            "applied": applied,
                            "reason": s.reason,
                        }
                    )
                if s.state == "skipped" and s.values.get("refused"):
                    job.message = s.reason
                    stop.cancel()

    async def _ask(self, row: catalog.EntityToAsk, kind: Kind) -> Asked:
        """The provider's answer for one entity, as a settlement; failures are values."""
        provider = self.provider()
        query = query_of(kind, row.name, row.attributes, catalog.ID_ATTRIBUTE)
        trace = Trace()

        def make(**kw: Any) -> catalog.Settlement:
            return catalog.Settlement(entity_id=row.id, provider=provider.name, kind=kind, **kw)

        def failed(failure: ProviderFailure) -> Asked:
            refused = failure.status in (401, 403)
            values = {"refused": True} if refused else {}
            reason = f"{provider.name}: {failure.reason}"
            return Asked(
                make(state="skipped", reason=reason, values=values, notes=tuple(trace.notes)),
                trace,
                query.title,
            )

        try:
            if query.provider_id is not None:
                details = await provider.details(kind, query.provider_id, trace)
                if isinstance(details, ProviderFailure):
                    return failed(details)
                s = make(
                    state="matched",
                    provider_id=details.provider_id,
                    confidence=1.0,
                    values=details.values,
                    reason=f"the entity holds {catalog.ID_ATTRIBUTE} {query.provider_id}",
                    notes=tuple(trace.notes),
                    how="by id",
                )
                return Asked(s, trace, query.title)
            found = await provider.search(kind, query.title, query.year, trace)
            if isinstance(found, ProviderFailure):
                return failed(found)
            scored = ranked(query.title, query.year, found)
            decision = decide(scored, self.config.min_confidence)
            candidates = [_candidate_json(sc.candidate, sc.confidence) for sc in scored]
            if decision.action == "none":
                s = make(state="none", reason=decision.reason, notes=tuple(trace.notes))
                return Asked(s, trace, query.title)
            assert decision.best is not None
            if decision.action == "pending":
                s = make(
                    state="pending",
                    confidence=decision.best.confidence,
                    candidates=candidates,
                    reason=decision.reason,
                    notes=tuple(trace.notes),
                )
                return Asked(s, trace, query.title)
            details = await provider.details(kind, decision.best.candidate.provider_id, trace)
            if isinstance(details, ProviderFailure):
                return failed(details)
            s = make(
                state="matched",
                provider_id=details.provider_id,
                confidence=decision.best.confidence,
                candidates=candidates,
                values=details.values,
                reason=decision.reason,
                notes=tuple(trace.notes),
            )
            return Asked(s, trace, query.title)
        except Exception as exc:  # a bug or a surprise in one answer skips that entity only
            log.error("enrichment of entity %s failed: %s", row.id, self.redact(traceback.format_exc()))
            return failed(ProviderFailure(self.redact(f"{type(exc).__name__}: {exc}")))

    async def _finish(self, job: Job, status: str) -> None:
        c = job.counts
        detail = (
            f"{c['considered']} asked: {c['matched']} matched, {c['pending']} pending, {c['none']} no match, "
            f"{c['skipped']} skipped; {c['unchanged']} unchanged since; {c['requests']} requests "
            f"({c['cached']} answers from the cache)"
        )
        if job.message:
            detail += f"; {job.message}"
        values = {
            "status": status,
            "finished": job.finished,
            "files_seen": c["considered"],
            "changed": c["matched"],
            "entities_updated": c["matched"],
            "errors": c["skipped"],
            "detail": detail,
        }
        run_id = job.run_id
        assert run_id is not None
        await self.daemon.write(lambda conn: finish_run(conn, run_id, values))

    # ----- the operator's decisions ----------------------------------------------------------

    async def validate(
        self, entity_id: int, entity_type: str, *, pick: int | None, provider_id: int | None
    ) -> tuple[catalog.Settlement, catalog.Settled] | str:
        """Settle one entity: candidate `pick` (from 1) of its pending list, a provider id, or
        (neither) no match. A string is why it cannot be."""
        kind = self.kinds().get(entity_type)
        if kind is None:
            return f"entities of type {entity_type!r} are not enriched ([enrich] movie_types, tv_types)"
        provider = self.provider()

        def make(**kw: Any) -> catalog.Settlement:
            return catalog.Settlement(entity_id=entity_id, provider=provider.name, kind=kind, **kw)

        confidence: float | None = None
        candidates: list[dict[str, Any]] = []
        how = "by id"
        if pick is not None:
            async with self.daemon.engine.connect() as conn:
                pending = await conn.run_sync(lambda c: catalog.pending_rows(c, entity_id))
            if not pending:
                return "it is not pending validation (importctl pending lists those that are)"
            candidates = pending[0].candidates
            if not 1 <= pick <= len(candidates):
                return f"--pick must be from 1 to {len(candidates)}"
            chosen = candidates[pick - 1]
            provider_id, confidence, how = int(chosen["provider_id"]), chosen.get("confidence"), "picked"
        if provider_id is None:
            s = make(state="none", reason="validated: no match")
        else:
            details = await provider.details(kind, provider_id, Trace())
            if isinstance(details, ProviderFailure):
                return f"{provider.name}: {details.reason}"
            s = make(
                state="matched",
                provider_id=provider_id,
                confidence=confidence,
                candidates=candidates,
                values=details.values,
                reason=f"validated ({how})",
                how=how,
            )
        now = self.daemon.now()
        settled = await self.daemon.write(lambda c: catalog.settle(c, s, now, None))
        self.daemon.apply_gap_events(settled.events)
        return s, settled

    async def unapply(self, *, entity_id: int | None, run_id: int | None) -> catalog.Unapplied:
        now = self.daemon.now()
        kinds = self.kinds()
        done = await self.daemon.write(
            lambda c: catalog.unapply(c, entity_id=entity_id, run_id=run_id, kinds=kinds, now=now)
        )
        self.daemon.apply_gap_events(done.events)
        return done

    async def aclose(self) -> None:
        for provider in [self._provider, *self._stale]:
            await _close(provider)
        self._provider, self._stale = None, []


async def _close(provider: Provider | None) -> None:
    closer = getattr(provider, "aclose", None)
    if closer is not None:
        with anyio.CancelScope(shield=True):
            await closer()


def _unsettled(row: catalog.EntityToAsk, kind: Kind) -> bool:
    """Asked again: never asked, skipped last time, or its query changed since."""
    if row.state is None or row.state == "skipped":
        return True
    return row.fingerprint != fingerprint(query_of(kind, row.name, row.attributes, catalog.ID_ATTRIBUTE))


def _limiter(config: EnrichConfig) -> RateLimiter:
    return RateLimiter(config.rate_limit, config.rate_window_seconds, guard=LIMITER_GUARD_S)


def _tmdb(config: EnrichConfig, limiter: RateLimiter) -> Provider:
    from importd.enrich.tmdb import TmdbProvider  # httpx is loaded only when enrichment is on

    return TmdbProvider(
        config.base_url,
        config.key,
        limiter,
        ResponseCache(config.cache_dir, config.cache_ttl_seconds),
        timeout=config.timeout_seconds,
        retry_base=config.retry_base_seconds,
        language=config.language,
    )


__all__ = ["COUNTS", "Daemon", "Enricher", "Job", "Selection"]
