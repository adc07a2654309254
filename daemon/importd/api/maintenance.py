"""Handlers for maintenance: symlink repair, the trash and integrity sweeps."""

from __future__ import annotations

from typing import cast

from importctl.protocol import (
    ApplyLinksReply,
    CheckResultReply,
    ErrorCode,
    LinkProposal,
    LinkResult,
    RepairLinksReply,
    RestoreReply,
    SweepProgress,
    TrashItem,
    TrashReply,
    iso_utc,
)
from importd.api.peer import caller
from importd.api.server import ApiError, Params
from importd.core import Core
from importd.maintenance.scrub import Budget, BudgetError, parse_budget

MAX_ACTIONS = 10_000


async def repair_links(core: Core, params: Params) -> RepairLinksReply:
    try:
        proposals = await core.maintenance.proposals(params.get("target"))
    except ValueError as exc:
        raise ApiError(ErrorCode.NOT_FOUND, str(exc)) from None
    return {"links": [cast(LinkProposal, p.to_json()) for p in proposals]}


async def apply_links(core: Core, params: Params) -> ApplyLinksReply:
    actions = params["actions"]
    if len(actions) > MAX_ACTIONS or not all(
        isinstance(a, dict) and isinstance(a.get("link"), str) and a.get("action") in ("repair", "trash")
        for a in actions
    ):
        raise ApiError(ErrorCode.INVALID, "actions: a list of {link, action: repair|trash, candidate}")
    who = caller().audit(params["who"])
    return {"results": cast(list[LinkResult], await core.maintenance.apply(actions, who))}


async def trash(core: Core, params: Params) -> TrashReply:
    items: list[TrashItem] = []
    for record in core.maintenance.trash.list(include_restored=bool(params.get("all"))):
        times = {"when": iso_utc(record.when), "restored_at": iso_utc(record.restored_at)}
        items.append(cast(TrashItem, record.to_json() | times))
    return {"items": items}


async def restore(core: Core, params: Params) -> RestoreReply:
    try:
        done = await core.maintenance.restore(params["id"], caller().audit(params["who"]))
    except ValueError as exc:
        raise ApiError(ErrorCode.INVALID, f"cannot restore {params['id']}: {exc}") from None
    return cast(RestoreReply, done)


async def check(core: Core, params: Params) -> SweepProgress:
    budget: Budget = Budget()
    if params.get("budget"):
        parsed = parse_budget(params["budget"])
        if isinstance(parsed, BudgetError):
            raise ApiError(ErrorCode.INVALID, f"budget {parsed.text!r}: {parsed.reason}")
        budget = parsed
    try:
        sweep = await core.maintenance.start_check(
            params.get("target"), bool(params.get("verify_hash")), budget
        )
    except ValueError as exc:
        raise ApiError(ErrorCode.NOT_FOUND, str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(ErrorCode.BUSY, str(exc)) from None
    return cast(SweepProgress, sweep.progress())


async def check_result(core: Core, params: Params) -> CheckResultReply:
    try:
        result = await core.maintenance.check_result(params["run_id"])
    except LookupError as exc:
        raise ApiError(ErrorCode.NOT_FOUND, str(exc)) from None
    return cast(CheckResultReply, result)
