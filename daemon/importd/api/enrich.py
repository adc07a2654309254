"""Enrichment's handlers: `enrich` queues a run (`enrich_progress` says where it is), `pending`
lists the entities waiting for a choice, `validate` settles one, `unapply` takes back what a
match or a run applied. Off (an `invalid` reply naming the section) unless `[enrich]` names a
provider and its key. No reply ever holds the key: it lives only in the provider's client."""

from __future__ import annotations

from importctl.protocol import (
    EnrichItem,
    EnrichReply,
    ErrorCode,
    PendingCandidate,
    PendingReply,
    UnapplyReply,
    ValidateReply,
    iso_utc,
)
from importd.api.server import ApiError, Params
from importd.catalog.enrich import pending_rows
from importd.catalog.entity_views import EntityId, EntityLookupError, find_entity
from importd.core import Core
from importd.pipeline.enrichment import Enricher, Job, Selection

OFF = "enrichment is off: configure a provider and its key in [enrich] (see config/importd.example.toml)"


def _enricher(core: Core) -> Enricher:
    if core.enricher is None:
        raise ApiError(ErrorCode.INVALID, OFF)
    return core.enricher


async def _entity(core: Core, spec: str) -> EntityId:
    async with core.engine.connect() as conn:
        found = await conn.run_sync(find_entity, spec)
    if isinstance(found, EntityLookupError):
        hint = f" (say one of: {', '.join(found.candidates[:10])})" if found.candidates else ""
        raise ApiError(ErrorCode.INVALID if found.candidates else ErrorCode.NOT_FOUND, found.message + hint)
    return found


def wire_job(job: Job) -> EnrichReply:
    c = job.counts
    items: list[EnrichItem] = [
        {
            "entity": i["entity"],
            "type": i["type"],
            "outcome": i["outcome"],
            "provider_id": i["provider_id"],
            "confidence": i["confidence"],
            "applied": list(i["applied"]),
            "reason": i["reason"],
        }
        for i in job.items
    ]
    return {
        "job": job.id,
        "run_id": job.run_id,
        "state": job.state,
        "dry_run": job.dry_run,
        "trigger": job.trigger,
        "selection": job.selection.label,
        "counts": {
            "considered": c["considered"],
            "unchanged": c["unchanged"],
            "matched": c["matched"],
            "pending": c["pending"],
            "none": c["none"],
            "skipped": c["skipped"],
            "conflicts": c["conflicts"],
            "requests": c["requests"],
            "cached": c["cached"],
        },
        "items": items,
        "message": job.message,
        "started": iso_utc(job.started),
        "finished": iso_utc(job.finished),
    }


async def enrich(core: Core, params: Params) -> EnrichReply:
    enricher = _enricher(core)
    spec, etype, every = params.get("entity"), params.get("type"), bool(params.get("all"))
    if sum(1 for x in (spec, etype, every) if x) != 1:
        raise ApiError(ErrorCode.INVALID, "say what to enrich: --entity NAME, --type T or --all")
    selection = Selection()
    if spec:
        found = await _entity(core, spec)
        if found.type not in enricher.kinds():
            raise ApiError(
                ErrorCode.INVALID,
                f"{found.name} is a {found.type}: only {', '.join(sorted(enricher.kinds()))} are enriched "
                "([enrich] movie_types, tv_types)",
            )
        selection = Selection(entity_ids=(found.id,), label=f"{found.type}:{found.name}")
    elif etype:
        if etype not in enricher.kinds():
            raise ApiError(
                ErrorCode.INVALID,
                f"type {etype!r} is not enriched (these are: {', '.join(sorted(enricher.kinds()))})",
            )
        selection = Selection(entity_type=etype, label=f"type {etype}")
    job = enricher.request(selection, dry_run=bool(params.get("dry_run")))
    if job is None:
        raise ApiError(ErrorCode.BUSY, "too many enrichment runs queued already")
    return wire_job(job)


async def enrich_progress(core: Core, params: Params) -> EnrichReply:
    job = _enricher(core).jobs.get(params["job"])
    if job is None:
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no enrichment job {params['job']!r} (jobs are kept until a restart)"
        )
    return wire_job(job)


async def pending(core: Core, params: Params) -> list[PendingReply]:
    _enricher(core)
    async with core.engine.connect() as conn:
        rows = await conn.run_sync(pending_rows)
    out: list[PendingReply] = []
    for row in rows:
        candidates: list[PendingCandidate] = [
            {
                "n": n,
                "provider_id": int(c["provider_id"]),
                "title": str(c.get("title") or ""),
                "original_title": c.get("original_title"),
                "year": c.get("year"),
                "confidence": float(c.get("confidence") or 0.0),
                "overview": str(c.get("overview") or ""),
            }
            for n, c in enumerate(row.candidates, start=1)
        ]
        out.append(
            {
                "id": row.entity_id,
                "type": row.type,
                "name": row.name,
                "kind": row.kind,
                "reason": row.reason,
                "since": iso_utc(row.at),
                "candidates": candidates,
            }
        )
    return out


async def validate(core: Core, params: Params) -> ValidateReply:
    enricher = _enricher(core)
    pick, provider_id, none = params.get("pick"), params.get("provider_id"), bool(params.get("none"))
    if sum(1 for x in (pick is not None, provider_id is not None, none) if x) != 1:
        raise ApiError(ErrorCode.INVALID, "say one of --pick N, --provider-id ID or --none")
    if provider_id is not None and provider_id < 1:
        raise ApiError(ErrorCode.INVALID, f"--provider-id must be a positive number, not {provider_id}")
    found = await _entity(core, params["entity"])
    done = await enricher.validate(found.id, found.type, pick=pick, provider_id=provider_id)
    if isinstance(done, str):
        raise ApiError(ErrorCode.INVALID, f"{found.name}: {done}")
    settlement, settled = done
    return {
        "entity": found.name,
        "state": settlement.state,
        "provider_id": settlement.provider_id,
        "applied": settled.applied,
        "conflicts": settled.conflicts,
    }


async def unapply(core: Core, params: Params) -> UnapplyReply:
    enricher = _enricher(core)
    spec, run_id = params.get("entity"), params.get("run_id")
    if (spec is None) == (run_id is None):
        raise ApiError(ErrorCode.INVALID, "say one of ENTITY or --run ID")
    entity_id = (await _entity(core, spec)).id if spec is not None else None
    done = await enricher.unapply(entity_id=entity_id, run_id=run_id)
    restored = sum(1 for r in done.restored if r.restored)
    return {
        "restored": restored,
        "left": len(done.restored) - restored,
        "conflicts_withdrawn": done.conflicts_withdrawn,
        "values": [
            {
                "entity": r.entity,
                "attribute": r.attribute,
                "value": r.value,
                "restored": r.restored,
                "why": r.why,
            }
            for r in done.restored
        ],
    }


__all__ = ["enrich", "enrich_progress", "pending", "unapply", "validate"]
