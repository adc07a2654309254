"""Handlers for symlink repair, the trash and integrity sweeps (part of the one handler table)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from importctl.protocol import ErrorCode, Method
from importd.api.server import ApiError, Handler
from importd.api.wire import iso
from importd.maintenance.scrub import Budget, BudgetError, parse_budget

if TYPE_CHECKING:
    from importd.service import Service

MAX_ACTIONS = 10_000


def build_maintenance_handlers(service: Service) -> dict[str, Handler]:
    def maintenance() -> Any:
        return service.maintenance

    def scope_error(exc: ValueError) -> ApiError:
        return ApiError(ErrorCode.NOT_FOUND, str(exc))

    async def repair_links(params: dict[str, Any]) -> dict[str, Any]:
        try:
            proposals = await maintenance().proposals(params.get("target"))
        except ValueError as exc:
            raise scope_error(exc) from None
        return {"links": [p.to_json() for p in proposals]}

    async def apply_links(params: dict[str, Any]) -> dict[str, Any]:
        actions = params["actions"]
        if len(actions) > MAX_ACTIONS or not all(
            isinstance(a, dict) and isinstance(a.get("link"), str) and a.get("action") in ("repair", "trash")
            for a in actions
        ):
            raise ApiError(ErrorCode.INVALID, "actions: a list of {link, action: repair|trash, candidate}")
        who = params["who"][:200] or "unknown"
        return {"results": await maintenance().apply(actions, who)}

    async def trash(params: dict[str, Any]) -> dict[str, Any]:
        records = maintenance().trash.list(include_restored=bool(params.get("all")))
        items = []
        for record in records:
            item = record.to_json()
            item["when"] = iso(item["when"])
            item["restored_at"] = iso(item["restored_at"])
            items.append(item)
        return {"items": items}

    async def restore(params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await maintenance().restore(params["id"], params["who"][:200] or "unknown")  # type: ignore[no-any-return]
        except ValueError as exc:
            raise ApiError(ErrorCode.INVALID, f"cannot restore {params['id']}: {exc}") from None

    async def check(params: dict[str, Any]) -> dict[str, Any]:
        budget: Budget = Budget()
        if params.get("budget"):
            parsed = parse_budget(params["budget"])
            if isinstance(parsed, BudgetError):
                raise ApiError(ErrorCode.INVALID, f"budget {parsed.text!r}: {parsed.reason}")
            budget = parsed
        try:
            sweep = await maintenance().start_check(
                params.get("target"), bool(params.get("verify_hash")), budget
            )
        except ValueError as exc:
            raise scope_error(exc) from None
        except RuntimeError as exc:
            raise ApiError(ErrorCode.BUSY, str(exc)) from None
        return sweep.progress()  # type: ignore[no-any-return]

    async def check_result(params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await maintenance().check_result(params["run_id"])  # type: ignore[no-any-return]
        except LookupError as exc:
            raise ApiError(ErrorCode.NOT_FOUND, str(exc)) from None

    return {
        Method.REPAIR_LINKS: repair_links,
        Method.APPLY_LINKS: apply_links,
        Method.TRASH: trash,
        Method.RESTORE: restore,
        Method.CHECK: check,
        Method.CHECK_RESULT: check_result,
    }
