"""Handlers for a legacy catalog's migration (`migrate_legacy`), its backlog (`pause`,
`resume`) and tags (`tags`)."""

from __future__ import annotations

import os

import anyio

from importctl.protocol import (
    DEFAULT_LEGACY_ROWS_LIMIT,
    MAX_LEGACY_ROWS_LIMIT,
    PAUSABLE,
    ErrorCode,
    MigrateLegacyReply,
    PauseReply,
    TagCountReply,
)
from importd.api.server import ApiError, Params
from importd.catalog.tags import tag_counts
from importd.core import Core
from importd.imports.legacy import MappingError, parse_mapping


def _read_text(path: str) -> str | OSError:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        return exc


async def migrate_legacy(core: Core, params: Params) -> MigrateLegacyReply:
    db, mapping_path = params["db"], params["mapping"]
    if not os.path.isabs(db) or not os.path.isabs(mapping_path):
        raise ApiError(
            ErrorCode.INVALID, "the legacy catalog and the mapping must be given as absolute paths"
        )
    limit = max(0, min(int(params.get("limit", DEFAULT_LEGACY_ROWS_LIMIT)), MAX_LEGACY_ROWS_LIMIT))
    text = await anyio.to_thread.run_sync(_read_text, mapping_path)
    if isinstance(text, OSError):
        raise ApiError(
            ErrorCode.NOT_FOUND if isinstance(text, FileNotFoundError) else ErrorCode.DENIED,
            f"cannot read the mapping {mapping_path}: {text.strerror}"
            " (hint: it must be readable by the importd service)",
        )
    mapping = parse_mapping(text)
    if isinstance(mapping, MappingError):
        raise ApiError(ErrorCode.INVALID, f"{mapping_path}: {mapping.message} (hint: {mapping.hint})")
    result = await core.migrate_legacy(db, mapping, commit=bool(params.get("commit")), limit=limit)
    if isinstance(result, MappingError):
        raise ApiError(ErrorCode(result.code), f"{result.message} (hint: {result.hint})")
    t = result.totals
    return {
        "run_id": result.run_id,
        "committed": result.committed,
        "totals": {
            "rows": t["rows"],
            "link": t["link"],
            "backlog": t["backlog"],
            "stale": t["stale"],
            "missing": t["missing"],
            "outside": t["outside"],
            "invalid": t["invalid"],
        },
        "rows": result.rows,
        "more": result.more,
    }


def _what(params: Params) -> str:
    what = params["what"]
    if what not in PAUSABLE:
        raise ApiError(
            ErrorCode.INVALID, f"cannot pause or resume {what!r} (hint: say one of: {', '.join(PAUSABLE)})"
        )
    return str(what)


async def pause(core: Core, params: Params) -> PauseReply:
    what = _what(params)
    await core.pause_migration(True)
    return {"what": what, "migration": core.migration_status()}


async def resume(core: Core, params: Params) -> PauseReply:
    what = _what(params)
    await core.pause_migration(False)
    return {"what": what, "migration": core.migration_status()}


async def tags(core: Core, params: Params) -> list[TagCountReply]:
    async with core.engine.connect() as conn:
        counts = await conn.run_sync(tag_counts)
    return [
        {"name": c.tag.name, "color": c.tag.color, "files": c.files, "entities": c.entities} for c in counts
    ]
