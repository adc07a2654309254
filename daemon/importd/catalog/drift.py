"""Reads for `importctl drift`: the files that hold attribute values (sidecars, NFO files,
metadata.json) with the entity each belongs to, and what those entities hold now: values, where
each came from and when (`attribute_sources`), and open conflicts. Comparing them with what the
files say now is `entities/drift.py`'s work; reading the files, the API's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from importd.catalog.models import STATUS_FORGOTTEN
from importd.catalog.tables import attribute_sources, chunks, conflicts, entities, entity_links, files


@dataclass(frozen=True)
class ValueFile:
    """A catalogued file whose role holds attribute values, linked to an entity."""

    file_id: int
    root_id: int
    relpath: bytes
    role: str
    status: str
    mtime: float  # seconds, as the catalog last saw the file
    entity_id: int


@dataclass
class EntityHolding:
    """What an entity holds: attribute values, their sources (kind, source, at) and open
    conflicts (id, attribute, proposed value, source)."""

    id: int
    type: str
    name: str
    attributes: dict[str, Any]
    sources: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    conflicts: list[tuple[int, str, Any, str]] = field(default_factory=list)


@dataclass
class DriftFacts:
    files: list[ValueFile]
    entities: dict[int, EntityHolding]


def drift_facts(conn: Connection, root_id: int | None, roles: Sequence[str]) -> DriftFacts:
    """Every file of `roles` linked to an entity (of one root, or all), forgotten ones aside, and
    the entities they belong to."""
    where = [
        entity_links.c.role.in_(list(roles)),
        entity_links.c.entity_id.is_not(None),
        files.c.status != STATUS_FORGOTTEN,
    ]
    if root_id is not None:
        where.append(files.c.root_id == root_id)
    rows = conn.execute(
        select(
            files.c.id,
            files.c.root_id,
            files.c.relpath,
            entity_links.c.role,
            files.c.status,
            files.c.mtime_ns,
            entity_links.c.entity_id,
        )
        .join(entity_links, entity_links.c.file_id == files.c.id)
        .where(*where)
        .order_by(files.c.root_id, files.c.relpath)
    )
    found = [
        ValueFile(fid, rid, bytes(rel), role, status, (mtime or 0) / 1e9, eid)
        for fid, rid, rel, role, status, mtime, eid in rows
    ]
    holdings: dict[int, EntityHolding] = {}
    ids = sorted({f.entity_id for f in found})
    for part in chunks(ids):
        for eid, etype, name, attrs in conn.execute(
            select(entities.c.id, entities.c.type, entities.c.name, entities.c.attributes).where(
                entities.c.id.in_(part), entities.c.merged_into.is_(None)
            )
        ):
            holdings[eid] = EntityHolding(eid, etype, name, json.loads(attrs))
        for eid, attribute, kind, source, at in conn.execute(
            select(
                attribute_sources.c.entity_id,
                attribute_sources.c.attribute,
                attribute_sources.c.kind,
                attribute_sources.c.source,
                attribute_sources.c.at,
            ).where(attribute_sources.c.entity_id.in_(part))
        ):
            if eid in holdings:
                holdings[eid].sources[attribute] = (kind, source, at)
        for cid, eid, attribute, proposed, source in conn.execute(
            select(
                conflicts.c.id,
                conflicts.c.entity_id,
                conflicts.c.attribute,
                conflicts.c.proposed,
                conflicts.c.source,
            )
            .where(
                conflicts.c.entity_id.in_(part),
                conflicts.c.status == "open",
                conflicts.c.kind == "attribute",
            )
            .order_by(conflicts.c.id)
        ):
            if eid in holdings:
                holdings[eid].conflicts.append((cid, attribute, json.loads(proposed), source))
    return DriftFacts([f for f in found if f.entity_id in holdings], holdings)
