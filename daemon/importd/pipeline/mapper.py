"""Map: registered files -> entities, metadata files -> attributes, and the live gap report.

Runs after the catalog writer has committed file changes. For each change it asks the root's
rule set what the path means (pure), reads the small metadata files the rules point at (in a
thread), then writes entities, links, conflicts and the run log in one transaction through the
single writer, and finally applies the same facts to the in-memory `LiveGapReport` as events.
A moved file keeps its row, so its link follows it; an entity is matched by (type, key), so a
second run over the same tree updates and never duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.engine import dialect_insert
from importd.catalog.models import (
    STATUS_PRESENT,
    ConflictRow,
    EntityFileRow,
    EntityRow,
    FileRow,
    RunLogRow,
)
from importd.catalog.writer import CatalogWriter, FileChange, chunks
from importd.entities import (
    Attributes,
    AttributeSet,
    Conflict,
    EntityRef,
    EntitySeen,
    EntityState,
    Expectations,
    ExpectationsChanged,
    FileId,
    FileLinked,
    FileMissing,
    FileRestored,
    FileUnlinked,
    GapChange,
    GapEvent,
    LinkState,
    LiveGapReport,
    MetadataFailure,
    PathMapping,
    ResolveFailure,
    RuleSet,
    TableRows,
    id_key,
    merge_attributes,
    name_key,
    read_metadata_json,
    read_sidecar,
    read_table,
    resolve_conflict,
)
from importd.paths import display, wire

log = logging.getLogger("importd.entities")

entities_t = EntityRow.__table__  # type: ignore[attr-defined]
links_t = EntityFileRow.__table__  # type: ignore[attr-defined]
conflicts_t = ConflictRow.__table__  # type: ignore[attr-defined]
runlog_t = RunLogRow.__table__  # type: ignore[attr-defined]
files_t = FileRow.__table__  # type: ignore[attr-defined]

READ_ROLES = ("metadata", "sidecar", "table")
MAX_METADATA_BYTES = 4 << 20


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
            runlog_t.insert().values(
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
                    select(
                        entities_t.c.id, entities_t.c.key, entities_t.c.name, entities_t.c.attributes
                    ).where(entities_t.c.type == etype, entities_t.c.key.in_(part))
                )
                for eid, key, name, attrs in rows:
                    self.entities[(etype, key)] = _Entity(eid, etype, key, name, json.loads(attrs))

    def ensure(self, etype: str, key: str, name: str, root_id: int, source: str) -> _Entity:
        entity = self.entities.get((etype, key))
        if entity is not None:
            return entity
        name = safe_text(name)
        res = self.conn.execute(
            entities_t.insert().values(
                type=etype, key=key, name=name, attributes="{}", first_seen=self.now, updated=self.now
            )
        )
        entity = _Entity(int(res.inserted_primary_key[0]), etype, key, name, {})  # type: ignore[index]
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
                select(conflicts_t.c.id).where(
                    conflicts_t.c.entity_id == entity.id,
                    conflicts_t.c.attribute == conflict.attribute,
                    conflicts_t.c.proposed == dumps(conflict.proposed),
                    conflicts_t.c.status == "open",
                )
            ).first()
            if existing is not None:
                continue
            self.conn.execute(
                conflicts_t.insert().values(
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
        stmt = dialect_insert(self.conn, links_t).values(values)
        self.conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["file_id"], set_={k: v for k, v in values.items() if k != "file_id"}
            )
        )

    def flush_entities(self) -> None:
        for entity in self.entities.values():
            if entity.dirty:
                self.conn.execute(
                    update(entities_t)
                    .where(entities_t.c.id == entity.id)
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
            select(links_t.c.file_id, links_t.c.entity_id).where(links_t.c.file_id.in_(part))
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


def load_states(conn: Connection) -> list[EntityState]:
    """Entities with their links, for building the live gap report at start-up."""
    entities: dict[int, tuple[str, str, str, dict[str, Any]]] = {}
    for eid, etype, key, name, attrs in conn.execute(
        select(
            entities_t.c.id, entities_t.c.type, entities_t.c.key, entities_t.c.name, entities_t.c.attributes
        )
    ):
        entities[eid] = (etype, key, name, json.loads(attrs))
    links: dict[int, dict[FileId, LinkState]] = {}
    rows = conn.execute(
        select(
            links_t.c.file_id,
            links_t.c.entity_id,
            links_t.c.role,
            links_t.c.link_attributes,
            files_t.c.status,
        )
        .join(files_t, files_t.c.id == links_t.c.file_id)
        .where(links_t.c.entity_id.is_not(None))
    )
    for fid, eid, role, attrs, status in rows:
        links.setdefault(eid, {})[fid] = LinkState(role or "", json.loads(attrs), status == STATUS_PRESENT)
    return [
        EntityState(etype, key, name, attrs, links.get(eid, {}))
        for eid, (etype, key, name, attrs) in entities.items()
    ]


def live_files_of_root(conn: Connection, root_id: int) -> list[FileChange]:
    rows = conn.execute(
        select(files_t.c.id, files_t.c.relpath, files_t.c.blake3).where(
            and_(files_t.c.root_id == root_id, files_t.c.status == STATUS_PRESENT)
        )
    )
    return [FileChange(fid, root_id, bytes(rel), "updated", digest) for fid, rel, digest in rows]


def _read_small(path: bytes) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if len(data) > MAX_METADATA_BYTES:
        return None, f"larger than {MAX_METADATA_BYTES >> 20} MiB: not read as metadata"
    return data, None


@dataclass
class _Marker:
    done: anyio.Event = field(default_factory=anyio.Event)


class EntityMapper:
    """The stage after registration. `submit` queues committed changes; `drain` waits until
    everything queued before it is mapped; `live` is the gap report, always current."""

    def __init__(
        self,
        engine: AsyncEngine,
        writer: CatalogWriter,
        expectations: Expectations,
        root_paths: Callable[[], Mapping[int, bytes]],
        run_ids: Callable[[], Mapping[int, int | None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.clock = clock
        self.root_paths = root_paths
        self.run_ids = run_ids
        self.rule_sets: dict[int, RuleSet | None] = {}
        self.live = LiveGapReport(expectations)
        self.listeners: list[Callable[[list[GapChange]], None]] = []
        self.on_outcome: Callable[[MappingOutcome], None] | None = None
        self._send: MemoryObjectSendStream[list[FileChange] | _Marker]
        self._recv: MemoryObjectReceiveStream[list[FileChange] | _Marker]
        # Unbounded: the writer hands changes over from inside its commit loop, and this stage
        # writes through the same writer, so a bounded queue could deadlock the two.
        self._send, self._recv = anyio.create_memory_object_stream[list[FileChange] | _Marker](math.inf)
        self.pending = 0
        self.last_error: str | None = None

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            states = await conn.run_sync(load_states)
        self.live = LiveGapReport(self.live.expectations, states)

    def set_rule_sets(self, rule_sets: Mapping[int, RuleSet | None]) -> list[int]:
        """New rule sets (start-up, reload); returns the roots whose files must be mapped again."""
        changed = [
            rid for rid, rs in rule_sets.items() if rid in self.rule_sets and self.rule_sets[rid] != rs
        ]
        self.rule_sets = dict(rule_sets)
        return changed

    def set_expectations(self, expectations: Expectations) -> None:
        if expectations != self.live.expectations:
            self.emit(self.live.apply(ExpectationsChanged(expectations)))

    async def remap_root(self, root_id: int) -> None:
        async with self.engine.connect() as conn:
            changes = await conn.run_sync(live_files_of_root, root_id)
        for part in chunks(changes, 2000):
            await self.submit(list(part))

    async def submit(self, changes: list[FileChange]) -> None:
        relevant = [c for c in changes if self.rule_sets.get(c.root_id) is not None]
        if relevant:
            self.pending += len(relevant)
            await self._send.send(relevant)

    async def drain(self) -> None:
        marker = _Marker()
        await self._send.send(marker)
        await marker.done.wait()

    async def run(self) -> None:
        async with self._recv:
            async for item in self._recv:
                if isinstance(item, _Marker):
                    item.done.set()
                    continue
                batch = list(item)
                while len(batch) < 5000:
                    try:
                        more = self._recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    if isinstance(more, _Marker):
                        await self._process(batch)
                        self.pending -= len(batch)
                        batch = []
                        more.done.set()
                        continue
                    batch.extend(more)
                if batch:
                    await self._process(batch)
                    self.pending -= len(batch)

    async def _process(self, changes: list[FileChange]) -> None:
        items = self._map(changes)
        to_read = [i for i, item in enumerate(items) if item.mapping and item.mapping.role in READ_ROLES]
        if to_read:
            roots = self.root_paths()
            paths = [
                roots.get(items[i].change.root_id, b"") + b"/" + items[i].change.relpath for i in to_read
            ]
            results = await anyio.to_thread.run_sync(lambda: [_read_small(p) for p in paths])
            for i, (data, error) in zip(to_read, results, strict=True):
                item = items[i]
                items[i] = MappedFile(item.change, item.mapping, data, error)
        items = self._resolve_ids(items)
        run_ids = dict(self.run_ids())
        try:
            outcome = await self.writer.call(lambda c: apply_mapping(c, items, self.clock(), run_ids))
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("mapping %d file(s) to entities failed", len(items))
            return
        self.last_error = None
        changes_out: list[GapChange] = []
        for event in outcome.events:
            changes_out.extend(self.live.apply(event))
        self.emit(changes_out)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _map(self, changes: Sequence[FileChange]) -> list[MappedFile]:
        out: list[MappedFile] = []
        for change in changes:
            rule_set = self.rule_sets.get(change.root_id)
            mapping = None
            if rule_set is not None and change.kind not in ("vanished", "error"):
                mapping = rule_set.map_path(wire(change.relpath))
                if mapping is not None and mapping.match_key == "path" and mapping.key:
                    # Path keys are relative to a root: the same relative path in two roots is
                    # two entities.
                    mapping = mapping.with_key(f"root{change.root_id}/{mapping.key}")
            out.append(MappedFile(change, mapping))
        return out

    def _resolve_ids(self, items: list[MappedFile]) -> list[MappedFile]:
        """`match_key = "id"`: the key comes from the id in the entity's metadata.json."""
        if not any(i.mapping and i.mapping.key is None and i.mapping.role != "table" for i in items):
            return items
        roots = self.root_paths()
        out = []
        for item in items:
            m = item.mapping
            if m is None or m.key is not None or m.role == "table":
                out.append(item)
                continue
            scope = os.fsencode(m.scope)
            data, _ = _read_small(roots.get(item.change.root_id, b"") + b"/" + scope + b"/metadata.json")
            parsed = read_metadata_json(data) if data is not None else None
            ident = parsed.values.get("id") if isinstance(parsed, Attributes) else None
            key = id_key(ident) if ident not in (None, "") else None
            out.append(MappedFile(item.change, m.with_key(key) if key else m, item.content, item.read_error))
        return out

    def emit(self, changes: list[GapChange]) -> None:
        if changes:
            for listener in self.listeners:
                listener(changes)


__all__ = ["EntityMapper", "MappedFile", "MappingOutcome", "apply_mapping", "load_states"]


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
    row = conn.execute(select(conflicts_t).where(conflicts_t.c.id == conflict_id)).first()
    if row is None:
        raise ResolveError("not_found", f"no conflict {conflict_id}")
    if row.status != "open":
        raise ResolveError("invalid", f"conflict {conflict_id} is already resolved ({row.status})")
    ent = conn.execute(select(entities_t).where(entities_t.c.id == row.entity_id)).one()
    attrs = json.loads(ent.attributes)
    conflict = Conflict(
        ent.name, row.attribute, json.loads(row.current), json.loads(row.proposed), row.source
    )
    ref = EntityRef(ent.type, ent.key, ent.name)
    if action == "keep":
        conn.execute(
            update(conflicts_t).where(conflicts_t.c.id == conflict_id).values(status="kept", resolved=now)
        )
        return Resolved(ref, row.attribute, attrs.get(row.attribute), False)
    result = resolve_conflict(attrs, conflict, "take_new")
    if isinstance(result, ResolveFailure):
        raise ResolveError("invalid", f"conflict {conflict_id}: {result.reason}")
    conn.execute(
        update(entities_t).where(entities_t.c.id == ent.id).values(attributes=dumps(result), updated=now)
    )
    conn.execute(
        update(conflicts_t).where(conflicts_t.c.id == conflict_id).values(status="taken", resolved=now)
    )
    conn.execute(
        runlog_t.insert().values(
            run_id=None,
            entity_id=ent.id,
            entity=ent.name,
            action="updated",
            detail=f"{row.attribute} set to the value from {row.source} (importctl resolve {conflict_id})",
            at=now,
        )
    )
    return Resolved(ref, row.attribute, result.get(row.attribute), True)
