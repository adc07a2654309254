"""Entity writes and reads: entities, how files map to them (`entity_files`), conflicts, and
the run log lines mapping writes.

`apply_mapping` is the transaction the mapper (`pipeline/mapper.py`) hands to the single writer
for one batch of committed file changes: it creates and updates entities, links files, records
conflicts (never applied silently) and logs each action. `load_states` reads everything back
for the live gap report at start-up; `resolve_conflict_tx` settles a conflict for `importctl
resolve`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection
from sqlmodel import col
from sqlmodel import select as typed_select
from sqlmodel.ext.asyncio.session import AsyncSession

from importd.catalog.engine import dialect_insert
from importd.catalog.models import (
    STATUS_FORGOTTEN,
    STATUS_PRESENT,
    ConflictRow,
    EntityFileRow,
    EntityRow,
    FileRow,
)
from importd.catalog.tables import chunks, conflicts, entities, entity_links, files, run_log
from importd.catalog.writer import FileChange
from importd.entities import (
    Attributes,
    AttributeSet,
    Conflict,
    EntityRef,
    EntitySeen,
    EntityState,
    FileId,
    FileLinked,
    FileMissing,
    FileRestored,
    FileUnlinked,
    GapEvent,
    LinkState,
    MetadataFailure,
    PathMapping,
    ResolveFailure,
    TableRows,
    merge_attributes,
    name_key,
    read_metadata_json,
    read_sidecar,
    read_table,
    resolve_conflict,
)
from importd.paths import display


def dumps(value: Any) -> str:
    # ASCII keeps surrogate-escaped bytes from odd file names storable as text.
    return json.dumps(value, ensure_ascii=True, sort_keys=True)


def safe_text(text: str) -> str:
    """Text SQLite can store: lone surrogates (bytes that were not UTF-8) spelled as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class MappedFile:
    change: FileChange
    mapping: PathMapping | None
    content: bytes | None = None
    read_error: str | None = None


@dataclass
class MappingOutcome:
    events: list[GapEvent] = field(default_factory=list)
    created: dict[int | None, int] = field(default_factory=dict)
    updated: dict[int | None, int] = field(default_factory=dict)
    conflicts: int = 0


@dataclass
class _Entity:
    id: int
    type: str
    key: str
    name: str
    attributes: dict[str, Any]
    dirty: bool = False


class _Batch:
    """The sync half: everything that touches the database for one batch of changes."""

    def __init__(self, conn: Connection, now: float, run_ids: Mapping[int, int | None]) -> None:
        self.conn = conn
        self.now = now
        self.run_ids = run_ids
        self.out = MappingOutcome()
        self.entities: dict[tuple[str, str], _Entity] = {}

    def _log(self, root_id: int, action: str, entity: _Entity | None, detail: str) -> None:
        run_id = self.run_ids.get(root_id)
        self.conn.execute(
            run_log.insert().values(
                run_id=run_id,
                entity_id=entity.id if entity else None,
                entity=entity.name if entity else None,
                action=action,
                detail=detail[:2000],
                at=self.now,
            )
        )
        if entity is not None and action in ("created", "updated"):
            counter = self.out.created if action == "created" else self.out.updated
            counter[run_id] = counter.get(run_id, 0) + 1

    def load_entities(self, keys: Iterable[tuple[str, str]]) -> None:
        wanted = sorted(set(keys) - set(self.entities))
        by_key: dict[str, list[str]] = {}
        for etype, key in wanted:
            by_key.setdefault(etype, []).append(key)
        for etype, keys_of_type in by_key.items():
            for part in chunks(keys_of_type):
                rows = self.conn.execute(
                    select(entities.c.id, entities.c.key, entities.c.name, entities.c.attributes).where(
                        entities.c.type == etype, entities.c.key.in_(part)
                    )
                )
                for eid, key, name, attrs in rows:
                    self.entities[(etype, key)] = _Entity(eid, etype, key, name, json.loads(attrs))

    def ensure(self, etype: str, key: str, name: str, root_id: int, source: str) -> _Entity:
        entity = self.entities.get((etype, key))
        if entity is not None:
            return entity
        name = safe_text(name)
        new = entities.insert().values(
            type=etype, key=key, name=name, attributes="{}", first_seen=self.now, updated=self.now
        )
        entity_id = int(self.conn.execute(new.returning(entities.c.id)).scalar_one())
        entity = _Entity(entity_id, etype, key, name, {})
        self.entities[(etype, key)] = entity
        self._log(root_id, "created", entity, f"from {source}")
        return entity

    def merge(self, entity: _Entity, incoming: Mapping[str, Any], root_id: int, source: str) -> None:
        if not incoming:
            return
        merge = merge_attributes(entity.attributes, incoming, entity=entity.name, source=source)
        changed = {k: v for k, v in merge.merged.items() if entity.attributes.get(k, None) != v}
        if changed:
            entity.attributes = dict(merge.merged)
            entity.dirty = True
            ref = EntityRef(entity.type, entity.key, entity.name)
            for attribute, value in changed.items():
                self.out.events.append(AttributeSet(ref, attribute, value))
            self._log(root_id, "updated", entity, f"{', '.join(sorted(changed))} from {source}")
        for conflict in merge.conflicts:
            existing = self.conn.execute(
                select(conflicts.c.id).where(
                    conflicts.c.entity_id == entity.id,
                    conflicts.c.attribute == conflict.attribute,
                    conflicts.c.proposed == dumps(conflict.proposed),
                    conflicts.c.status == "open",
                )
            ).first()
            if existing is not None:
                continue
            self.conn.execute(
                conflicts.insert().values(
                    entity_id=entity.id,
                    attribute=conflict.attribute,
                    current=dumps(conflict.current),
                    proposed=dumps(conflict.proposed),
                    source=safe_text(source),
                    status="open",
                    created=self.now,
                )
            )
            self.out.conflicts += 1
            self._log(
                root_id,
                "skipped",
                entity,
                f"conflict on {conflict.attribute}: keeps {conflict.current!r}, "
                f"{source} says {conflict.proposed!r}",
            )

    def link(self, file_id: int, root_id: int, entity: _Entity | None, mapping: PathMapping | None) -> None:
        values = {
            "file_id": file_id,
            "entity_id": entity.id if entity else None,
            "root_id": root_id,
            "rule_index": mapping.rule_index if mapping else None,
            "role": mapping.role if mapping else None,
            "link_attributes": dumps(dict(mapping.link_attributes)) if mapping else "{}",
            "pre_approved": bool(mapping and mapping.pre_approved),
            "mapped_at": self.now,
        }
        stmt = dialect_insert(self.conn, entity_links).values(values)
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["file_id"], set_={k: v for k, v in values.items() if k != "file_id"}
            )
        )

    def flush_entities(self) -> None:
        for entity in self.entities.values():
            if entity.dirty:
                self.conn.execute(
                    update(entities)
                    .where(entities.c.id == entity.id)
                    .values(attributes=dumps(entity.attributes), updated=self.now)
                )
                entity.dirty = False


def apply_mapping(
    conn: Connection, items: Sequence[MappedFile], now: float, run_ids: Mapping[int, int | None]
) -> MappingOutcome:
    batch = _Batch(conn, now, run_ids)
    file_ids = [item.change.file_id for item in items]
    linked: dict[int, int | None] = {}
    for part in chunks(file_ids):
        for fid, eid in conn.execute(
            select(entity_links.c.file_id, entity_links.c.entity_id).where(entity_links.c.file_id.in_(part))
        ):
            linked[fid] = eid
    batch.load_entities(
        (item.mapping.entity_type, item.mapping.key) for item in items if item.mapping and item.mapping.key
    )
    for item in items:
        change = item.change
        root_id = change.root_id
        path = display(change.relpath)
        if change.duplicate:
            batch._log(
                root_id,
                "duplicate",
                None,
                f"{path}: same content as a file already catalogued ({change.blake3})",
            )
        if change.kind in ("vanished", "error"):
            if linked.get(change.file_id) is not None:
                batch.out.events.append(FileMissing(change.file_id))
            continue
        if change.kind == "forgotten":
            # Settled by the operator: the gap report treats it as a file that is not there (no
            # highest episode either). The link row stays, for `forget --undo`.
            if linked.get(change.file_id) is not None:
                batch.out.events.append(FileUnlinked(change.file_id))
            continue
        if change.kind == "unforgotten":
            back = _link_state(conn, change.file_id)
            if back is not None:
                batch.out.events.append(FileLinked(change.file_id, back[0], back[1]))
            continue
        mapping = item.mapping
        if mapping is None:
            batch.link(change.file_id, root_id, None, None)
            if linked.get(change.file_id) is not None:
                batch.out.events.append(FileUnlinked(change.file_id))
            continue
        if mapping.role == "table":
            batch.link(change.file_id, root_id, None, mapping)
            _apply_table(batch, item, root_id, path)
            continue
        if mapping.key is None or mapping.entity_name is None:
            batch._log(root_id, "failed", None, f"{path}: no entity key (match_key {mapping.match_key!r})")
            continue
        batch.load_entities([(mapping.entity_type, mapping.key)])
        entity = batch.ensure(mapping.entity_type, mapping.key, mapping.entity_name, root_id, path)
        batch.link(change.file_id, root_id, entity, mapping)
        ref = EntityRef(entity.type, entity.key, entity.name)
        batch.out.events.append(
            FileLinked(change.file_id, ref, LinkState(mapping.role, mapping.link_attributes, True))
        )
        if linked.get(change.file_id) == entity.id and change.kind == "revived":
            batch.out.events.append(FileRestored(change.file_id))
        if mapping.entity_attributes:
            batch.merge(entity, dict(mapping.entity_attributes), root_id, path)
        if mapping.role in ("metadata", "sidecar"):
            _apply_metadata(batch, item, entity, root_id, path)
    batch.flush_entities()
    return batch.out


def _apply_metadata(batch: _Batch, item: MappedFile, entity: _Entity, root_id: int, path: str) -> None:
    mapping = item.mapping
    assert mapping is not None
    if item.read_error is not None or item.content is None:
        batch._log(root_id, "failed", entity, f"{path}: {item.read_error or 'not read'}")
        return
    if mapping.role == "sidecar":
        parsed = read_sidecar(item.content, mapping.attribute or "notes")
    else:
        parsed = read_metadata_json(item.content)
    if isinstance(parsed, MetadataFailure):
        batch._log(root_id, "failed", entity, f"{path}: {parsed.reason}")
        return
    assert isinstance(parsed, Attributes)
    batch.merge(entity, parsed.values, root_id, path)


def _apply_table(batch: _Batch, item: MappedFile, root_id: int, path: str) -> None:
    mapping = item.mapping
    assert mapping is not None
    if item.read_error is not None or item.content is None:
        batch._log(root_id, "failed", None, f"{path}: {item.read_error or 'not read'}")
        return
    parsed = read_table(item.content)
    if isinstance(parsed, MetadataFailure):
        batch._log(root_id, "failed", None, f"{path}: {parsed.reason}")
        return
    assert isinstance(parsed, TableRows)
    keys = [(mapping.entity_type, name_key(name)) for name, _ in parsed.rows]
    batch.load_entities(keys)
    for (etype, key), (name, attrs) in zip(keys, parsed.rows, strict=True):
        entity = batch.ensure(etype, key, name, root_id, path)
        batch.out.events.append(_seen(entity))
        batch.merge(entity, attrs, root_id, path)


def _seen(entity: _Entity) -> GapEvent:
    return EntitySeen(EntityRef(entity.type, entity.key, entity.name))


def _link_state(conn: Connection, file_id: int) -> tuple[EntityRef, LinkState] | None:
    """The entity a file is linked to and the link as the gap report holds it (present or not,
    by the file's status now)."""
    row = conn.execute(
        select(
            entities.c.type,
            entities.c.key,
            entities.c.name,
            entity_links.c.role,
            entity_links.c.link_attributes,
            files.c.status,
        )
        .join(entities, entities.c.id == entity_links.c.entity_id)
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.file_id == file_id)
    ).first()
    if row is None:
        return None
    etype, key, name, role, attrs, status = row
    return EntityRef(etype, key, name), LinkState(role or "", json.loads(attrs), status == STATUS_PRESENT)


def load_states(conn: Connection) -> list[EntityState]:
    """Entities with their links, for building the live gap report at start-up (and for
    `gaps --recompute`). A forgotten file's link is left out: it is not there."""
    by_id: dict[int, tuple[str, str, str, dict[str, Any]]] = {}
    for eid, etype, key, name, attrs in conn.execute(
        select(entities.c.id, entities.c.type, entities.c.key, entities.c.name, entities.c.attributes)
    ):
        by_id[eid] = (etype, key, name, json.loads(attrs))
    links: dict[int, dict[FileId, LinkState]] = {}
    rows = conn.execute(
        select(
            entity_links.c.file_id,
            entity_links.c.entity_id,
            entity_links.c.role,
            entity_links.c.link_attributes,
            files.c.status,
        )
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.entity_id.is_not(None), files.c.status != STATUS_FORGOTTEN)
    )
    for fid, eid, role, attrs, status in rows:
        links.setdefault(eid, {})[fid] = LinkState(role or "", json.loads(attrs), status == STATUS_PRESENT)
    return [
        EntityState(etype, key, name, attrs, links.get(eid, {}))
        for eid, (etype, key, name, attrs) in by_id.items()
    ]


def live_files_of_root(conn: Connection, root_id: int) -> list[FileChange]:
    rows = conn.execute(
        select(files.c.id, files.c.relpath, files.c.blake3).where(
            and_(files.c.root_id == root_id, files.c.status == STATUS_PRESENT)
        )
    )
    return [FileChange(fid, root_id, bytes(rel), "updated", digest) for fid, rel, digest in rows]


@dataclass(frozen=True)
class Resolved:
    entity: EntityRef
    attribute: str
    value: Any
    applied: bool


class ResolveError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_conflict_tx(conn: Connection, conflict_id: int, action: str, now: float) -> Resolved:
    """Settle one conflict: keep the entity's value, or take the proposed one. Runs inside the
    writer's transaction; a conflict whose current value changed since is refused (stale)."""
    row = conn.execute(select(conflicts).where(conflicts.c.id == conflict_id)).first()
    if row is None:
        raise ResolveError("not_found", f"no conflict {conflict_id}")
    if row.status != "open":
        raise ResolveError("invalid", f"conflict {conflict_id} is already resolved ({row.status})")
    ent = conn.execute(select(entities).where(entities.c.id == row.entity_id)).one()
    attrs = json.loads(ent.attributes)
    conflict = Conflict(
        ent.name, row.attribute, json.loads(row.current), json.loads(row.proposed), row.source
    )
    ref = EntityRef(ent.type, ent.key, ent.name)
    if action == "keep":
        conn.execute(
            update(conflicts).where(conflicts.c.id == conflict_id).values(status="kept", resolved=now)
        )
        return Resolved(ref, row.attribute, attrs.get(row.attribute), False)
    result = resolve_conflict(attrs, conflict, "take_new")
    if isinstance(result, ResolveFailure):
        raise ResolveError("invalid", f"conflict {conflict_id}: {result.reason}")
    conn.execute(
        update(entities).where(entities.c.id == ent.id).values(attributes=dumps(result), updated=now)
    )
    conn.execute(update(conflicts).where(conflicts.c.id == conflict_id).values(status="taken", resolved=now))
    conn.execute(
        run_log.insert().values(
            run_id=None,
            entity_id=ent.id,
            entity=ent.name,
            action="updated",
            detail=f"{row.attribute} set to the value from {row.source} (importctl resolve {conflict_id})",
            at=now,
        )
    )
    return Resolved(ref, row.attribute, result.get(row.attribute), True)


async def unmatched_rows(
    session: AsyncSession, root_id: int | None, limit: int
) -> tuple[list[tuple[int, bytes]], int]:
    """Present files of mapped roots that matched no rule; and how many there are in all."""
    base = (
        typed_select(FileRow.root_id, FileRow.relpath)
        .join(EntityFileRow, col(EntityFileRow.file_id) == col(FileRow.id))
        .where(
            col(EntityFileRow.entity_id).is_(None),
            col(EntityFileRow.role).is_(None),
            FileRow.status == STATUS_PRESENT,
        )
    )
    if root_id is not None:
        base = base.where(EntityFileRow.root_id == root_id)
    total = (await session.exec(typed_select(func.count()).select_from(base.subquery()))).one()
    rows = await session.exec(base.order_by(col(FileRow.root_id), col(FileRow.relpath)).limit(limit))
    return [(rid, bytes(rel)) for rid, rel in rows], int(total)


async def unmatched_by_folder(session: AsyncSession, root_id: int | None) -> list[tuple[int, bytes]]:
    """(root_id, relpath) of every unmatched file, for the per-folder counts."""
    rows, _ = await unmatched_rows(session, root_id, 10_000_000)
    return rows


# Lists are read as the models' columns, not as a model per row (which made reading 500
# conflicts 1.85 times slower).
_CONFLICT: tuple[Any, ...] = (
    *(getattr(ConflictRow, name) for name in ConflictRow.model_fields),
    col(EntityRow.type).label("entity_type"),
    col(EntityRow.name).label("entity_name"),
)


async def conflict_rows(session: AsyncSession, status: str | None) -> list[dict[str, Any]]:
    stmt = (
        typed_select(*_CONFLICT)
        .join(EntityRow, col(EntityRow.id) == col(ConflictRow.entity_id))
        .order_by(col(ConflictRow.id))
    )
    if status:
        stmt = stmt.where(ConflictRow.status == status)
    return [dict(r._mapping) for r in await session.exec(stmt)]


_LINKED: tuple[Any, ...] = (
    EntityFileRow.file_id, EntityRow.type, EntityRow.name, EntityFileRow.role, EntityFileRow.pre_approved,
)  # fmt: skip


async def links_of_files(session: AsyncSession, file_ids: list[int]) -> dict[int, dict[str, Any]]:
    """{file_id: {"type", "name", "role", "pre_approved"}} for mapped files."""
    out: dict[int, dict[str, Any]] = {}
    for part in chunks(file_ids):
        rows = await session.exec(
            typed_select(*_LINKED)
            .join(EntityRow, col(EntityRow.id) == col(EntityFileRow.entity_id))
            .where(col(EntityFileRow.file_id).in_(part))
        )
        for fid, etype, name, role, pre in rows:
            out[fid] = {"type": etype, "name": name, "role": role, "pre_approved": bool(pre)}
    return out
