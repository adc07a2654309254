"""Handlers that show entities: `entities` (the list) and `entity` (one entity's page)."""

from __future__ import annotations

import os

from importctl.protocol import EntityFile, EntityReply, EntitySummaryReply, ErrorCode, iso_utc
from importd.api.server import ApiError, Params
from importd.api.site import roots_by_id
from importd.catalog.entity_views import EntityLookupError, entity_page, entity_summaries, find_entity
from importd.catalog.roots import SiteRoot
from importd.core import Core
from importd.paths import wire


async def entities(core: Core, params: Params) -> list[EntitySummaryReply]:
    async with core.engine.connect() as conn:
        rows = await conn.run_sync(entity_summaries, params.get("type"))
    live = core.gap_report_of
    out: list[EntitySummaryReply] = []
    for e in rows:
        gaps = live(e.type, e.key)
        out.append(
            {
                "id": e.id,
                "type": e.type,
                "name": e.name,
                "key": e.key,
                "files": e.files,
                "present": e.present,
                "missing": len(gaps.missing) if gaps else 0,
                "conflicts": e.conflicts,
                "orphaned": bool(gaps and gaps.orphaned),
            }
        )
    return out


def _site_path(core: Core, root: SiteRoot | None, relpath: bytes) -> str:
    """An entity's file: its absolute path on this server, `host:path` on another one (entities
    are site-wide)."""
    if root is None:
        return wire(relpath)
    path = wire(os.fsencode(root.path) + b"/" + relpath)
    return path if root.host == core.host else f"{root.host}:{path}"


async def entity(core: Core, params: Params) -> EntityReply:
    async with core.engine.connect() as conn:
        found = await conn.run_sync(find_entity, params["entity"])
        if isinstance(found, EntityLookupError):
            hint = f" (say one of: {', '.join(found.candidates[:10])})" if found.candidates else ""
            code = ErrorCode.INVALID if found.candidates else ErrorCode.NOT_FOUND
            raise ApiError(code, found.message + hint)
        page = await conn.run_sync(entity_page, found)
    roots = await roots_by_id(core)
    files: list[EntityFile] = [
        {"role": role, "path": _site_path(core, roots.get(rid), rel), "status": status}
        for role, rid, rel, status in page.files
    ]
    gaps = core.gap_report_of(found.type, found.key)
    return {
        "id": found.id,
        "type": found.type,
        "name": found.name,
        "key": found.key,
        "first_seen": iso_utc(page.first_seen),
        "updated": iso_utc(page.updated),
        "attributes": {
            name: {
                "value": value,
                "source": page.sources[name][0] if name in page.sources else None,
                "detail": page.sources[name][1] if name in page.sources else None,
                "at": iso_utc(page.sources[name][2]) if name in page.sources else None,
            }
            for name, value in sorted(page.attributes.items())
        },
        "files": files,
        "tags": [{"name": name, "color": color} for name, color in page.tags],
        "missing": [{"kind": m.kind, "name": m.name} for m in gaps.missing] if gaps else [],
        "orphaned_since": iso_utc(gaps.orphaned_since) if gaps else None,
        "conflicts": page.conflicts,
    }
