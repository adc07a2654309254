"""Handler for the brake on mass disappearance: confirm what a root holds."""

from __future__ import annotations

from importctl.protocol import ConfirmMissingReply, ErrorCode
from importd.api.server import ApiError, Params
from importd.core import Core


async def confirm_missing(core: Core, params: Params) -> ConfirmMissingReply:
    name = params["root"]
    root = next((r for r in core.roots() if r.name == name), None)
    if root is None:
        known = ", ".join(r.name for r in core.roots()) or "none"
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"no root named {name!r} (configured: {known}; `importctl status` lists them)",
        )
    confirmed = await core.confirm_held(root.root_id)
    if not confirmed:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"nothing is held for root {name!r} (`importctl status` shows which roots are held)",
        )
    return {"root": name, "confirmed": confirmed}
