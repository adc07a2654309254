"""Reads that show entities: which entity an operator means (`TYPE:NAME`, a NAME unique across
types, or a numeric id: the same forms wherever a command takes an entity), the list of them,
and one entity's whole page (attributes with their sources, files by role, tags, conflicts).
What an entity still misses comes from the live gap report, not from here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.engine import Connection

from importd.catalog.models import GONE_STATUSES, STATUS_FORGOTTEN, STATUS_PRESENT
from importd.catalog.tables import (
    attribute_sources,
    chunks,
    conflicts,
    entities,
    entity_links,
    entity_tags,
    files,
    tags,
)
from importd.entities import fold, name_key


@dataclass(frozen=True)
class EntityId:
    id: int
    type: str
    key: str
    name: str


@dataclass(frozen=True)
class EntityLookupError:
    """No entity, or several: `candidates` are the `TYPE:NAME`s a NAME could mean."""

    message: str
    candidates: tuple[str, ...] = ()


def find_entity(conn: Connection, spec: str) -> EntityId | EntityLookupError:
    """The entity `spec` names: a numeric id, `TYPE:NAME` (when TYPE is a type the catalog
    holds: a name may contain a colon), or a NAME that only one entity has (case, accents'
    spelling and spacing aside)."""
    live = entities.c.merged_into.is_(None)
    cols = (entities.c.id, entities.c.type, entities.c.key, entities.c.name)
    text = spec.strip()
    # ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses. An id past
    # 64 bits names no row (and SQLite could not even bind it).
    if text.isascii() and text.isdigit():
        entity_id = int(text) if len(text) <= 18 else None
        row = (
            conn.execute(select(*cols).where(entities.c.id == entity_id, live)).first() if entity_id else None
        )
        return EntityId(*row) if row else EntityLookupError(f"no entity with id {text}")
    entity_type: str | None = None
    name = text
    if ":" in text:
        prefix, rest = text.split(":", 1)
        known = conn.execute(select(entities.c.id).where(entities.c.type == prefix, live).limit(1)).first()
        if known is not None:
            entity_type, name = prefix, rest
    where = [live] + ([entities.c.type == entity_type] if entity_type else [])
    # The name key finds name-keyed entities by index; the others (path and id keys) by name.
    rows = conn.execute(
        select(*cols).where(*where, or_(entities.c.key == name_key(name), entities.c.name == name))
    ).all()
    if not rows:
        wanted = fold(name)
        rows = [r for r in conn.execute(select(*cols).where(*where)) if fold(r.name) == wanted]
    if len(rows) == 1:
        return EntityId(*rows[0])
    if not rows:
        kind = f" of type {entity_type}" if entity_type else ""
        return EntityLookupError(f"no entity{kind} named {name!r}")
    # Of several types, TYPE:NAME tells them apart; of one type, only their ids do.
    by_type = len({r.type for r in rows}) > 1
    found = tuple(sorted(f"{r.type}:{r.name}" if by_type else f"#{r.id}" for r in rows))
    return EntityLookupError(f"{len(rows)} entities are named {name!r}", found)


@dataclass
class EntitySummary:
    id: int
    type: str
    name: str
    key: str
    files: int = 0
    present: int = 0
    conflicts: int = 0


def entity_summaries(conn: Connection, entity_type: str | None) -> list[EntitySummary]:
    """Every entity (merged ones aside) with its counts of files (forgotten ones aside), present
    files and open conflicts; sorted by type, then name."""
    where = [entities.c.merged_into.is_(None)] + ([entities.c.type == entity_type] if entity_type else [])
    out = {
        eid: EntitySummary(eid, etype, name, key)
        for eid, etype, name, key in conn.execute(
            select(entities.c.id, entities.c.type, entities.c.name, entities.c.key).where(*where)
        )
    }
    counted = conn.execute(
        select(
            entity_links.c.entity_id,
            func.count(),
            func.sum(case((files.c.status == STATUS_PRESENT, 1), else_=0)),
        )
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.entity_id.is_not(None), files.c.status != STATUS_FORGOTTEN)
        .group_by(entity_links.c.entity_id)
    )
    for eid, n, present in counted:
        if eid in out:
            out[eid].files, out[eid].present = int(n), int(present or 0)
    for eid, n in conn.execute(
        select(conflicts.c.entity_id, func.count())
        .where(conflicts.c.status == "open")
        .group_by(conflicts.c.entity_id)
    ):
        if eid in out:
            out[eid].conflicts = int(n)
    return sorted(out.values(), key=lambda e: (e.type, fold(e.name), e.id))


@dataclass
class EntityPage:
    entity: EntityId
    attributes: dict[str, Any]
    sources: dict[str, tuple[str, str, float]]  # attribute -> (kind, source, at)
    files: list[tuple[str | None, int, bytes, str]] = field(
        default_factory=list
    )  # role, root, relpath, status
    tags: list[tuple[str, str | None]] = field(default_factory=list)  # name, colour
    conflicts: list[int] = field(default_factory=list)
    first_seen: float = 0.0
    updated: float = 0.0


def entity_page(conn: Connection, entity: EntityId) -> EntityPage:
    row = conn.execute(
        select(entities.c.attributes, entities.c.first_seen, entities.c.updated).where(
            entities.c.id == entity.id
        )
    ).one()
    page = EntityPage(entity, json.loads(row.attributes), {}, first_seen=row.first_seen, updated=row.updated)
    for attribute, kind, source, at in conn.execute(
        select(
            attribute_sources.c.attribute,
            attribute_sources.c.kind,
            attribute_sources.c.source,
            attribute_sources.c.at,
        ).where(attribute_sources.c.entity_id == entity.id)
    ):
        page.sources[attribute] = (kind, source, at)
    page.files = [
        (role, rid, bytes(rel), status)
        for role, rid, rel, status in conn.execute(
            select(entity_links.c.role, files.c.root_id, files.c.relpath, files.c.status)
            .join(files, files.c.id == entity_links.c.file_id)
            .where(entity_links.c.entity_id == entity.id)
            .order_by(entity_links.c.role, files.c.root_id, files.c.relpath)
        )
    ]
    page.tags = [
        (name, color)
        for name, color in conn.execute(
            select(tags.c.name, tags.c.color)
            .join(entity_tags, entity_tags.c.tag_id == tags.c.id)
            .where(entity_tags.c.entity_id == entity.id)
            .order_by(tags.c.key)
        )
    ]
    page.conflicts = [
        cid
        for (cid,) in conn.execute(
            select(conflicts.c.id)
            .where(
                conflicts.c.status == "open",
                or_(conflicts.c.entity_id == entity.id, conflicts.c.other_entity_id == entity.id),
            )
            .order_by(conflicts.c.id)
        )
    ]
    return page


def entities_by_keys(
    conn: Connection, keys: list[tuple[str, str]], root_id: int
) -> tuple[dict[tuple[str, str], tuple[str, dict[str, Any]]], dict[tuple[str, str], set[bytes]]]:
    """For a preview: the entities the catalog holds under these keys ({(type, key): (name,
    attributes)}), and the relpaths under `root_id` of the live files linked to each."""
    held: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    ids: dict[int, tuple[str, str]] = {}
    by_type: dict[str, list[str]] = {}
    for etype, key in keys:
        by_type.setdefault(etype, []).append(key)
    for etype, wanted in by_type.items():
        for part in chunks(sorted(set(wanted))):
            for eid, key, name, attrs in conn.execute(
                select(entities.c.id, entities.c.key, entities.c.name, entities.c.attributes).where(
                    entities.c.type == etype, entities.c.key.in_(part), entities.c.merged_into.is_(None)
                )
            ):
                held[(etype, key)] = (name, json.loads(attrs))
                ids[eid] = (etype, key)
    linked: dict[tuple[str, str], set[bytes]] = {}
    for id_part in chunks(sorted(ids)):
        for eid, rel in conn.execute(
            select(entity_links.c.entity_id, files.c.relpath)
            .join(files, files.c.id == entity_links.c.file_id)
            .where(
                entity_links.c.entity_id.in_(id_part),
                files.c.root_id == root_id,
                files.c.status.not_in(GONE_STATUSES),
            )
        ):
            linked.setdefault(ids[eid], set()).add(bytes(rel))
    return held, linked
