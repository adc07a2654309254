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
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, bindparam, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased
from sqlmodel import col
from sqlmodel import select as typed_select
from sqlmodel.ext.asyncio.session import AsyncSession

from importd.catalog.engine import dialect_insert
from importd.catalog.models import (
    GONE_STATUSES,
    LIVE_PATH_WHERE,
    STATUS_FORGOTTEN,
    STATUS_PRESENT,
    ConflictRow,
    EntityFileRow,
    EntityRow,
    FileRow,
)
from importd.catalog.tables import (
    attribute_sources,
    chunks,
    conflicts,
    entities,
    entity_links,
    files,
    insert_rows,
    roots,
    run_log,
)
from importd.catalog.tags import ensure_tags, tag_entity, tag_file
from importd.catalog.writer import FileChange
from importd.entities import (
    NO_LINK_ATTRIBUTES,
    Attributes,
    AttributeSet,
    Conflict,
    EntityRef,
    EntityRemoved,
    EntityRenamed,
    EntitySeen,
    EntityState,
    FileForgotten,
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
from importd.entities.sidecars import (
    SIDECAR_ROLES,
    TagName,
    read_facts,
    sidecar_stem_of_path,
    source_kind,
)
from importd.media.versions import media_kind_of_path
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
    # A sidecar read again only for the tags of the video beside it, which arrived after it.
    tags_only: bool = False


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
    """The sync half: everything that touches the database for one batch of changes. Run log
    lines and attribute sources are kept and written at `flush_entities`, each kind as one
    statement with many parameter sets (a statement per line cost the CSV import two thirds of
    its time)."""

    def __init__(self, conn: Connection, now: float, run_ids: Mapping[int, int | None]) -> None:
        self.conn = conn
        self.now = now
        self.run_ids = run_ids
        self.out = MappingOutcome()
        self.entities: dict[tuple[str, str], _Entity] = {}
        self._log_lines: list[dict[str, Any]] = []
        self._sources: list[dict[str, Any]] = []
        self._links: list[dict[str, Any]] = []

    def _log(self, root_id: int, action: str, entity: _Entity | None, detail: str) -> None:
        run_id = self.run_ids.get(root_id)
        self._log_lines.append(
            {
                "run_id": run_id,
                "entity_id": entity.id if entity else None,
                "entity": entity.name if entity else None,
                "action": action,
                "detail": detail[:2000],
                "at": self.now,
            }
        )
        if entity is not None and action in ("created", "updated"):
            counter = self.out.created if action == "created" else self.out.updated
            counter[run_id] = counter.get(run_id, 0) + 1

    def load_entities(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read these entities into the batch, each row locked until the batch commits (FOR
        UPDATE: PostgreSQL; SQLite has one writer and ignores the clause): attributes are read,
        merged and written back, and another server's daemon doing the same to the same entity
        at once would otherwise lose one of the two updates. Sorted, so two batches lock in the
        same order; a deadlock left is retried by the writer."""
        wanted = sorted(set(keys) - set(self.entities))
        by_key: dict[str, list[str]] = {}
        for etype, key in wanted:
            by_key.setdefault(etype, []).append(key)
        for etype, keys_of_type in by_key.items():
            for part in chunks(keys_of_type):
                rows = self.conn.execute(
                    select(entities.c.id, entities.c.key, entities.c.name, entities.c.attributes)
                    .where(
                        entities.c.type == etype, entities.c.key.in_(part), entities.c.merged_into.is_(None)
                    )
                    .order_by(entities.c.key)
                    .with_for_update()
                )
                for eid, key, name, attrs in rows:
                    self.entities[(etype, key)] = _Entity(eid, etype, key, name, json.loads(attrs))

    def by_id(self, entity_id: int) -> _Entity | None:
        for entity in self.entities.values():
            if entity.id == entity_id:
                return entity
        row = self.conn.execute(
            select(entities.c.type, entities.c.key, entities.c.name, entities.c.attributes)
            .where(entities.c.id == entity_id, entities.c.merged_into.is_(None))
            .with_for_update()
        ).first()
        if row is None:
            return None
        entity = _Entity(entity_id, row.type, row.key, row.name, json.loads(row.attributes))
        self.entities[(row.type, row.key)] = entity
        return entity

    def ensure(self, etype: str, key: str, name: str, root_id: int, source: str) -> _Entity:
        entity = self.entities.get((etype, key))
        if entity is not None:
            return entity
        name = safe_text(name)
        row = {
            "type": etype,
            "key": key,
            "name": name,
            "attributes": "{}",
            "first_seen": self.now,
            "updated": self.now,
        }
        # Another server's daemon may create the same entity at this moment (entities are
        # site-wide): the second insert waits for the first to commit, then takes its row.
        new = (
            dialect_insert(self.conn, entities)
            .values(row)
            .on_conflict_do_nothing(index_elements=["type", "key"])
            .returning(entities.c.id)
        )
        entity_id = self.conn.execute(new).scalar()
        if entity_id is None:
            self.load_entities([(etype, key)])
            found = self.entities.get((etype, key))
            if found is None:
                raise RuntimeError(f"entity {etype} {key!r} exists but could not be read")
            return found
        entity = _Entity(int(entity_id), etype, key, name, {})
        self.entities[(etype, key)] = entity
        self._log(root_id, "created", entity, f"from {source}")
        return entity

    def merge(
        self,
        entity: _Entity,
        incoming: Mapping[str, Any],
        root_id: int,
        source: str,
        kind: str,
        *,
        overwrite: bool = False,
    ) -> None:
        """Fill the entity's empty attributes from `incoming` (from `source`, of `kind`: see
        ATTRIBUTE_SOURCE_KINDS); a differing value becomes an open conflict, or, when the
        operator said so (`importctl import-csv --overwrite`), replaces the value."""
        if not incoming:
            return
        merge = merge_attributes(entity.attributes, incoming, entity=entity.name, source=source)
        if overwrite and merge.conflicts:
            taken = {c.attribute: c.proposed for c in merge.conflicts}
            merge = merge._replace(merged={**merge.merged, **taken}, conflicts=[])
        changed = {k: v for k, v in merge.merged.items() if entity.attributes.get(k, None) != v}
        if changed:
            entity.attributes = dict(merge.merged)
            entity.dirty = True
            ref = EntityRef(entity.type, entity.key, entity.name)
            for attribute, value in changed.items():
                self.out.events.append(AttributeSet(ref, attribute, value))
            self._sources.extend(
                source_rows(entity.id, changed, kind, source, self.run_ids.get(root_id), self.now)
            )
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
        """Kept and written at `flush_links`: every file of a root gets a link row (an unmapped
        one too), and an upsert built and run per file was most of a cold import's mapping."""
        self._links.append(
            {
                "file_id": file_id,
                "entity_id": entity.id if entity else None,
                "root_id": root_id,
                "rule_index": mapping.rule_index if mapping else None,
                "role": mapping.role if mapping else None,
                "link_attributes": dumps(dict(mapping.link_attributes)) if mapping else "{}",
                "pre_approved": bool(mapping and mapping.pre_approved),
                "mapped_at": self.now,
            }
        )

    def flush_links(self) -> None:
        """The kept link rows, as one statement with many parameter sets (in order: a file linked
        twice in a batch keeps its last link)."""
        if not self._links:
            return
        if self.conn.dialect.name == "sqlite":
            # One statement per 256 links: SQLAlchemy's executemany stepped one row at a time, 12 s
            # of the writer's time for the million links of a cold import (every file gets one).
            rows = [_link_row(link) for link in self._links]
            insert_rows(self.conn, "entity_files", _LINK_ROW, rows, _LINK_TAIL)
        else:
            self.conn.execute(_link_upsert(self.conn), self._links)
        self._links = []

    def flush_entities(self) -> None:
        """Write the kept links, the changed attributes, the kept attribute sources and run log
        lines."""
        self.flush_links()
        dirty = [e for e in self.entities.values() if e.dirty]
        if dirty:
            self.conn.execute(
                update(entities)
                .where(entities.c.id == bindparam("entity_id"))
                .values(attributes=bindparam("new_attributes"), updated=self.now),
                [{"entity_id": e.id, "new_attributes": dumps(e.attributes)} for e in dirty],
            )
            for entity in dirty:
                entity.dirty = False
        if self._sources:
            self.conn.execute(_source_upsert(self.conn), self._sources)
            self._sources = []
        if self._log_lines:
            self.conn.execute(run_log.insert(), self._log_lines)
            self._log_lines = []


def apply_mapping(
    conn: Connection,
    items: Sequence[MappedFile],
    now: float,
    run_ids: Mapping[int, int | None],
    fully_carried: frozenset[int] = frozenset(),
    host: str | None = None,
) -> MappingOutcome:
    """`fully_carried`: entities none of whose present files stays where it was on this server
    (the mapper checked their paths on disk), so the moves in `items` carry the whole entity
    unless another server (`host` is this one) has present files of it."""
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
    gone_since = _gone_since(
        conn,
        [i.change.file_id for i in items if i.change.kind == "vanished" and linked.get(i.change.file_id)],
    )
    if fully_carried:
        _follow_carried_entities(batch, items, linked, fully_carried, host)
    kept_apart = _merge_pairs_held(conn, {eid for eid in linked.values() if eid is not None})
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
                # An unreadable file is there: it satisfies nothing, but it is not gone.
                batch.out.events.append(FileMissing(change.file_id, gone_since.get(change.file_id)))
            continue
        if change.kind == "forgotten":
            # Settled by the operator: the gap report counts it for nothing (no highest episode
            # either). The link row stays, for `forget --undo`.
            if linked.get(change.file_id) is not None:
                batch.out.events.append(FileForgotten(change.file_id))
            continue
        if change.kind == "unforgotten":
            batch.flush_links()  # its link row may be among the kept ones
            back = _link_state(conn, change.file_id)
            if back is not None:
                batch.out.events.append(FileLinked(change.file_id, back[0], back[1]))
            continue
        mapping = item.mapping
        if item.tags_only and mapping is not None:
            _apply_sidecar(batch, item, None, root_id, path)
            continue
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
        owner = linked.get(change.file_id)
        if owner is not None and owner != entity.id and (owner, entity.id) in kept_apart:
            # A merge proposal is open (or was refused) between its entity and the one its new
            # folder names: it stays with its entity until the operator merges them.
            entity = batch.by_id(owner) or entity
        batch.link(change.file_id, root_id, entity, mapping)
        ref = EntityRef(entity.type, entity.key, entity.name)
        batch.out.events.append(
            FileLinked(change.file_id, ref, LinkState(mapping.role, mapping.link_attributes, True))
        )
        if linked.get(change.file_id) == entity.id and change.kind == "revived":
            batch.out.events.append(FileRestored(change.file_id))
        if mapping.entity_attributes:
            batch.merge(entity, dict(mapping.entity_attributes), root_id, path, "folder_rule")
        if mapping.role in ("metadata", "sidecar"):
            _apply_metadata(batch, item, entity, root_id, path)
        elif mapping.role in SIDECAR_ROLES:
            _apply_sidecar(batch, item, entity, root_id, path)
    batch.flush_entities()
    return batch.out


def _follow_carried_entities(
    batch: _Batch,
    items: Sequence[MappedFile],
    linked: Mapping[int, int | None],
    fully_carried: frozenset[int],
    host: str | None,
) -> None:
    """Moves that carry every present file of an entity to one new key: the entity follows its
    files (same id, attributes, conflicts and history; new key and name) when no entity holds
    that key, and a merge proposal is recorded when one does. Runs before the batch's files are
    linked, so they link to the renamed entity."""
    targets: dict[int, dict[tuple[str, str], MappedFile]] = {}
    for item in items:
        mapping = item.mapping
        old = linked.get(item.change.file_id)
        if (
            item.change.kind != "moved"
            or old is None
            or old not in fully_carried
            or mapping is None
            or mapping.role == "table"
            or not mapping.key
            or mapping.entity_name is None
        ):
            continue
        targets.setdefault(old, {}).setdefault((mapping.entity_type, mapping.key), item)
    for old_id, to in targets.items():
        if len(to) != 1:
            continue  # split over several entities: each part maps as it comes
        ((etype, key), item) = next(iter(to.items()))
        assert item.mapping is not None and item.mapping.entity_name is not None
        row = batch.conn.execute(
            select(entities.c.type, entities.c.key, entities.c.name, entities.c.attributes).where(
                entities.c.id == old_id, entities.c.merged_into.is_(None)
            )
        ).first()
        if (
            row is None
            or row.type != etype
            or (host is not None and _present_elsewhere(batch.conn, old_id, host))
        ):
            continue  # files of it stay behind on another server: the moved ones make a new entity
        name = safe_text(item.mapping.entity_name)
        folder = display(item.change.relpath.rsplit(b"/", 1)[0]) if b"/" in item.change.relpath else "."
        holder = batch.entities.get((etype, key))
        if key == row.key and name == row.name:
            continue
        if holder is not None and holder.id != old_id:
            _propose_merge(batch, item.change.root_id, old_id, row.name, holder, folder)
            continue
        batch.conn.execute(
            update(entities).where(entities.c.id == old_id).values(key=key, name=name, updated=batch.now)
        )
        moved = batch.entities.pop((etype, row.key), None) or _Entity(
            old_id, etype, key, name, json.loads(row.attributes)
        )
        moved.key, moved.name = key, name
        batch.entities[(etype, key)] = moved
        batch.out.events.append(EntityRenamed(row.key, EntityRef(etype, key, name)))
        batch._log(item.change.root_id, "renamed", moved, f"{row.name} → {name}: its files moved to {folder}")


def _present_elsewhere(conn: Connection, entity_id: int, host: str) -> bool:
    """Has this entity a present file under another server's roots?"""
    row = conn.execute(
        select(entity_links.c.file_id)
        .join(files, files.c.id == entity_links.c.file_id)
        .join(roots, roots.c.id == files.c.root_id)
        .where(entity_links.c.entity_id == entity_id, files.c.status == STATUS_PRESENT, roots.c.host != host)
        .limit(1)
    ).first()
    return row is not None


def _gone_since(conn: Connection, file_ids: list[int]) -> dict[int, float]:
    """When these files were marked missing, as their rows say (the orphaned entity's date)."""
    out: dict[int, float] = {}
    for part in chunks(file_ids):
        out.update(
            (fid, since)
            for fid, since in conn.execute(
                select(files.c.id, func.coalesce(files.c.missing_since, files.c.last_seen)).where(
                    files.c.id.in_(part), files.c.status.in_(GONE_STATUSES)
                )
            )
        )
    return out


def record_sources(
    conn: Connection,
    entity_id: int,
    values: Mapping[str, Any],
    kind: str,
    source: str,
    run_id: int | None,
    now: float,
) -> None:
    """Remember where these attribute values came from (one row per attribute: the latest)."""
    rows = source_rows(entity_id, values, kind, source, run_id, now)
    if rows:
        conn.execute(_source_upsert(conn), rows)


def source_rows(
    entity_id: int, values: Iterable[str], kind: str, source: str, run_id: int | None, now: float
) -> list[dict[str, Any]]:
    text = safe_text(source)[:2000]
    return [
        {"entity_id": entity_id, "attribute": a, "kind": kind, "source": text, "run_id": run_id, "at": now}
        for a in values
    ]


_SOURCE_UPSERTS: dict[str, Any] = {}
_LINK_UPSERTS: dict[str, Any] = {}
_LINK_COLUMNS = ("entity_id", "root_id", "rule_index", "role", "link_attributes", "pre_approved", "mapped_at")
# A link row's columns in the order `_Batch.link` builds it, and the upsert's tail on SQLite.
_LINK_ROW = ("file_id", *_LINK_COLUMNS)
_link_row = itemgetter(*_LINK_ROW)
_LINK_TAIL = " ON CONFLICT (file_id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _LINK_COLUMNS)


def _source_upsert(conn: Connection) -> Any:
    """The attribute_sources upsert, built once per dialect and run with parameters: building it
    per value (with .values() and `excluded`) cost more than running it."""
    stmt = _SOURCE_UPSERTS.get(conn.dialect.name)
    if stmt is None:
        insert = dialect_insert(conn, attribute_sources)
        stmt = insert.on_conflict_do_update(
            index_elements=["entity_id", "attribute"],
            set_={k: insert.excluded[k] for k in ("kind", "source", "run_id", "at")},
        )
        _SOURCE_UPSERTS[conn.dialect.name] = stmt
    return stmt


def _link_upsert(conn: Connection) -> Any:
    """The entity_links upsert, built once per dialect and run with parameters (as above)."""
    stmt = _LINK_UPSERTS.get(conn.dialect.name)
    if stmt is None:
        insert = dialect_insert(conn, entity_links)
        stmt = insert.on_conflict_do_update(
            index_elements=["file_id"],
            set_={k: insert.excluded[k] for k in _LINK_COLUMNS},
        )
        _LINK_UPSERTS[conn.dialect.name] = stmt
    return stmt


def _merge_pairs_held(conn: Connection, entity_ids: set[int]) -> set[tuple[int, int]]:
    """(entity, other) pairs whose merge proposal is open or was refused (kept apart)."""
    pairs: set[tuple[int, int]] = set()
    for part in chunks(sorted(entity_ids)):
        pairs.update(
            (eid, other)
            for eid, other in conn.execute(
                select(conflicts.c.entity_id, conflicts.c.other_entity_id).where(
                    conflicts.c.kind == "merge",
                    conflicts.c.status.in_(("open", "kept_apart")),
                    conflicts.c.entity_id.in_(part),
                )
            )
        )
    return pairs


def _propose_merge(
    batch: _Batch, root_id: int, entity_id: int, name: str, into: _Entity, folder: str
) -> None:
    open_already = batch.conn.execute(
        select(conflicts.c.id).where(
            conflicts.c.kind == "merge",
            conflicts.c.entity_id == entity_id,
            conflicts.c.other_entity_id == into.id,
            conflicts.c.status == "open",
        )
    ).first()
    if open_already is not None:
        return
    conflict_id = batch.conn.execute(
        conflicts.insert()
        .values(
            entity_id=entity_id,
            kind="merge",
            other_entity_id=into.id,
            attribute="",
            current=dumps(name),
            proposed=dumps(into.name),
            source=safe_text(folder),
            status="open",
            created=batch.now,
        )
        .returning(conflicts.c.id)
    ).scalar_one()
    batch.out.conflicts += 1
    batch._log(
        root_id,
        "skipped",
        into,
        f"merge proposed (#{conflict_id}): every file of {name} moved to {folder}, the folder of "
        f"{into.name}; importctl resolve {conflict_id} --merge | --keep-apart",
    )


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
    batch.merge(entity, parsed.values, root_id, path, mapping.role)


def _apply_sidecar(batch: _Batch, item: MappedFile, entity: _Entity | None, root_id: int, path: str) -> None:
    """A `video_json`, `video_tags`, `scenes` or `nfo` file: its attributes merge into the entity
    (provenance `nfo` or `sidecar`; a differing value is a conflict), its tags go on the entity
    and on the video it describes. `entity` is None for a `tags_only` replay."""
    mapping = item.mapping
    assert mapping is not None
    if item.read_error is not None or item.content is None:
        batch._log(root_id, "failed", entity, f"{path}: {item.read_error or 'not read'}")
        return
    name = display(item.change.relpath.rsplit(b"/", 1)[-1])
    facts = read_facts(mapping.role, item.content, name)
    if isinstance(facts, MetadataFailure):
        if entity is not None:  # a replay's failure was logged when the file was first read
            batch._log(root_id, "failed", entity, f"{path}: {facts.reason}")
        return
    if entity is not None:
        batch.merge(entity, facts.attributes, root_id, path, source_kind(mapping.role))
        if facts.entity_tags:
            tag_entity(batch.conn, entity.id, _tag_ids(batch, facts.entity_tags), path, batch.now)
    if facts.file_tags:
        target = described_file(batch.conn, root_id, item.change.relpath)
        if target is not None:
            tag_file(batch.conn, target, _tag_ids(batch, facts.file_tags), path, batch.now)


def _tag_ids(batch: _Batch, names: Sequence[TagName]) -> list[int]:
    found = ensure_tags(batch.conn, dict(names), batch.now)
    return [tag.id for tag in found.values()]


def described_file(conn: Connection, root_id: int, relpath: bytes) -> int | None:
    """The live media file a sidecar describes: beside it, named as the sidecar without its
    suffix (`Amélie.mkv` for `Amélie.tags.json`, `Amélie.nfo`), or exactly that name
    (`Amélie.mkv.tags.json`). None when there is none (yet) or several could be meant."""
    stem = sidecar_stem_of_path(relpath)
    if stem is None:
        return None
    # One range of the live-path index: the stem and every name that goes on from it. Written as
    # `= stem OR a range`, SQLite read all of the root's rows for each sidecar (a cold import of
    # a million files with 40,000 sidecars went at 2,000 files/s).
    rows = conn.execute(
        select(files.c.id, files.c.relpath).where(
            files.c.root_id == root_id,
            text(LIVE_PATH_WHERE),
            files.c.relpath >= stem,
            files.c.relpath < stem + b"/",
        )
    ).all()
    found = []
    for fid, raw in rows:
        rel = bytes(raw)
        after, rest = rel[len(stem) : len(stem) + 1], rel[len(stem) + 1 :]
        beside = rel == stem or (after == b"." and b"/" not in rest and b"." not in rest)
        if beside and media_kind_of_path(rel) is not None:
            found.append(fid)
    return found[0] if len(found) == 1 else None


def sidecar_files(conn: Connection, root_id: int, roles: Sequence[str]) -> list[tuple[int, bytes]]:
    """(file_id, relpath) of a root's live files mapped in one of `roles`."""
    rows = conn.execute(
        select(files.c.id, files.c.relpath)
        .join(entity_links, entity_links.c.file_id == files.c.id)
        .where(files.c.root_id == root_id, text(LIVE_PATH_WHERE), entity_links.c.role.in_(list(roles)))
    )
    return [(fid, bytes(rel)) for fid, rel in rows]


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
        batch.merge(entity, attrs, root_id, path, "table")


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
            func.coalesce(files.c.missing_since, files.c.last_seen),
        )
        .join(entities, entities.c.id == entity_links.c.entity_id)
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.file_id == file_id)
    ).first()
    if row is None:
        return None
    etype, key, name, role, attrs, status, since = row
    return EntityRef(etype, key, name), _link(role, attrs, status, since)


def _link(role: str | None, attrs: str, status: str, gone_since: float | None) -> LinkState:
    """The link as the gap report holds it; `gone_since` only counts for a file that is gone (a
    row in error is there, just unreadable)."""
    return LinkState(
        role or "",
        json.loads(attrs) if attrs != "{}" else NO_LINK_ATTRIBUTES,
        status == STATUS_PRESENT,
        gone_since if status in GONE_STATUSES else None,
        forgotten=status == STATUS_FORGOTTEN,
    )


def load_states(conn: Connection, host: str | None = None) -> list[EntityState]:
    """Entities with their links, for building the live gap report at start-up (and for
    `gaps --recompute`). Merged entities are left out: their files belong to the other one.

    With `host`, one server's view of a catalog several servers share: links of its own roots'
    files only, and the entities they name (and those no file names anywhere, as from a CSV).
    Without, the whole site (`gaps --site`)."""
    by_id: dict[int, tuple[str, str, str, dict[str, Any]]] = {}
    for eid, etype, key, name, attrs in conn.execute(
        select(entities.c.id, entities.c.type, entities.c.key, entities.c.name, entities.c.attributes).where(
            entities.c.merged_into.is_(None)
        )
    ):
        by_id[eid] = (etype, key, name, json.loads(attrs))
    links: dict[int, dict[FileId, LinkState]] = {}
    rows = (
        select(
            entity_links.c.file_id,
            entity_links.c.entity_id,
            entity_links.c.role,
            entity_links.c.link_attributes,
            files.c.status,
            func.coalesce(files.c.missing_since, files.c.last_seen),
        )
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.entity_id.is_not(None))
    )
    elsewhere: set[int] = set()
    if host is not None:
        ours = select(roots.c.id).where(roots.c.host == host).scalar_subquery()
        rows = rows.where(entity_links.c.root_id.in_(ours))
        elsewhere = {
            eid
            for (eid,) in conn.execute(
                select(entity_links.c.entity_id)
                .where(entity_links.c.entity_id.is_not(None), entity_links.c.root_id.not_in(ours))
                .distinct()
            )
        }
    for fid, eid, role, attrs, status, since in conn.execute(rows):
        links.setdefault(eid, {})[fid] = _link(role, attrs, status, since)
    return [
        EntityState(etype, key, name, attrs, links.get(eid, {}))
        for eid, (etype, key, name, attrs) in by_id.items()
        if eid in links or eid not in elsewhere
    ]


def entities_updated_since(
    conn: Connection, since: float
) -> list[tuple[str, str, str, dict[str, Any], float]]:
    """(type, key, name, attributes, updated) of the entities written at or after `since`."""
    rows = conn.execute(
        select(
            entities.c.type, entities.c.key, entities.c.name, entities.c.attributes, entities.c.updated
        ).where(entities.c.updated >= since, entities.c.merged_into.is_(None))
    )
    return [(t, k, n, json.loads(a), u) for t, k, n, a, u in rows]


def live_files_of_root(conn: Connection, root_id: int) -> list[FileChange]:
    rows = conn.execute(
        select(files.c.id, files.c.relpath, files.c.blake3).where(
            and_(files.c.root_id == root_id, files.c.status == STATUS_PRESENT)
        )
    )
    return [FileChange(fid, root_id, bytes(rel), "updated", digest) for fid, rel, digest in rows]


@dataclass(frozen=True)
class Resolved:
    """A settled conflict: for an attribute, its value now; for a merge proposal, `value` is the
    other entity's name. `events` bring the live gap report up to date."""

    entity: EntityRef
    attribute: str
    value: Any
    status: str  # kept | taken | merged | kept_apart
    events: tuple[GapEvent, ...] = ()


class ResolveError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_ACTIONS = {"attribute": ("keep", "take_new"), "merge": ("merge", "keep_apart")}


def resolve_conflict_tx(conn: Connection, conflict_id: int, action: str, now: float) -> Resolved:
    """Settle one conflict or merge proposal. Runs inside the writer's transaction; an attribute
    conflict whose current value changed since is refused (stale)."""
    row = conn.execute(select(conflicts).where(conflicts.c.id == conflict_id)).first()
    if row is None:
        raise ResolveError("not_found", f"no conflict {conflict_id}")
    if row.status != "open":
        raise ResolveError("invalid", f"conflict {conflict_id} is already resolved ({row.status})")
    if action not in _ACTIONS.get(row.kind, ()):
        wanted = " or ".join("--" + a.replace("_", "-") for a in _ACTIONS.get(row.kind, ()))
        raise ResolveError("invalid", f"conflict {conflict_id} ({row.kind}): settle it with {wanted}")
    ent = conn.execute(select(entities).where(entities.c.id == row.entity_id)).one()
    ref = EntityRef(ent.type, ent.key, ent.name)
    if row.kind == "merge":
        return _settle_merge(conn, row, ent, action, now)
    attrs = json.loads(ent.attributes)
    conflict = Conflict(
        ent.name, row.attribute, json.loads(row.current), json.loads(row.proposed), row.source
    )
    if action == "keep":
        conn.execute(
            update(conflicts).where(conflicts.c.id == conflict_id).values(status="kept", resolved=now)
        )
        return Resolved(ref, row.attribute, attrs.get(row.attribute), "kept")
    result = resolve_conflict(attrs, conflict, "take_new")
    if isinstance(result, ResolveFailure):
        raise ResolveError("invalid", f"conflict {conflict_id}: {result.reason}")
    conn.execute(
        update(entities).where(entities.c.id == ent.id).values(attributes=dumps(result), updated=now)
    )
    conn.execute(update(conflicts).where(conflicts.c.id == conflict_id).values(status="taken", resolved=now))
    record_sources(
        conn, ent.id, {row.attribute: result.get(row.attribute)}, "resolved", row.source, None, now
    )
    _log_settled(
        conn,
        ent.id,
        ent.name,
        "updated",
        f"{row.attribute} set to the value from {row.source}",
        conflict_id,
        now,
    )
    value = result.get(row.attribute)
    return Resolved(ref, row.attribute, value, "taken", (AttributeSet(ref, row.attribute, value),))


def _settle_merge(conn: Connection, row: Any, ent: Any, action: str, now: float) -> Resolved:
    """`--keep-apart`: nothing changes. `--merge`: the other entity takes this one's links, open
    conflicts and attributes (a differing value becomes a conflict of its own, never applied
    silently); this one keeps its row, marked merged, its key moved aside."""
    into = conn.execute(select(entities).where(entities.c.id == row.other_entity_id)).one()
    ref = EntityRef(ent.type, ent.key, ent.name)
    if action == "keep_apart":
        conn.execute(
            update(conflicts).where(conflicts.c.id == row.id).values(status="kept_apart", resolved=now)
        )
        _log_settled(conn, ent.id, ent.name, "kept apart", f"not merged into {into.name}", row.id, now)
        return Resolved(ref, "", into.name, "kept_apart")
    if into.merged_into is not None:
        raise ResolveError("invalid", f"conflict {row.id}: {into.name} was itself merged since")
    batch = _Batch(conn, now, {})
    target = _Entity(into.id, into.type, into.key, into.name, json.loads(into.attributes))
    batch.merge(target, json.loads(ent.attributes), 0, f"the merge of {ent.name}", "merge")
    batch.flush_entities()  # its log lines belong to no run (root 0 has no run)
    into_ref = EntityRef(into.type, into.key, into.name)
    moved = conn.execute(
        select(
            entity_links.c.file_id,
            entity_links.c.role,
            entity_links.c.link_attributes,
            files.c.status,
            func.coalesce(files.c.missing_since, files.c.last_seen),
        )
        .join(files, files.c.id == entity_links.c.file_id)
        .where(entity_links.c.entity_id == ent.id)
    ).all()
    conn.execute(update(entity_links).where(entity_links.c.entity_id == ent.id).values(entity_id=into.id))
    conn.execute(
        update(conflicts)
        .where(conflicts.c.entity_id == ent.id, conflicts.c.status == "open", conflicts.c.kind == "attribute")
        .values(entity_id=into.id)
    )
    conn.execute(
        update(entities)
        .where(entities.c.id == ent.id)
        .values(merged_into=into.id, key=f"merged{ent.id}:{ent.key}", updated=now)
    )
    conn.execute(update(conflicts).where(conflicts.c.id == row.id).values(status="merged", resolved=now))
    _log_settled(conn, into.id, into.name, "merged", f"{ent.name} merged into it", row.id, now)
    events: list[GapEvent] = [EntityRemoved(ent.type, ent.key)]
    events.extend(
        FileLinked(fid, into_ref, _link(role, attrs, status, since))
        for fid, role, attrs, status, since in moved
    )
    events.extend(batch.out.events)
    return Resolved(ref, "", into.name, "merged", tuple(events))


def _log_settled(
    conn: Connection, entity_id: int, name: str, action: str, detail: str, conflict_id: int, now: float
) -> None:
    conn.execute(
        run_log.insert().values(
            run_id=None,
            entity_id=entity_id,
            entity=name,
            action=action,
            detail=f"{detail} (importctl resolve {conflict_id})",
            at=now,
        )
    )


def entity_members(
    conn: Connection, file_ids: Sequence[int], limit: int
) -> list[tuple[int, str, str, int, int, bytes]]:
    """(entity_id, type, key, file_id, root_id, relpath) of every present file of the entities
    these files are linked to, these files included; at most `limit` rows."""
    owners: set[int] = set()
    for part in chunks(list(file_ids)):
        owners.update(
            eid
            for (eid,) in conn.execute(
                select(entity_links.c.entity_id).where(
                    entity_links.c.file_id.in_(part), entity_links.c.entity_id.is_not(None)
                )
            )
        )
    out: list[tuple[int, str, str, int, int, bytes]] = []
    for part in chunks(sorted(owners)):
        rows = conn.execute(
            select(
                entities.c.id, entities.c.type, entities.c.key, files.c.id, files.c.root_id, files.c.relpath
            )
            .join(entity_links, entity_links.c.entity_id == entities.c.id)
            .join(files, files.c.id == entity_links.c.file_id)
            .where(entities.c.id.in_(part), files.c.status == STATUS_PRESENT)
            .limit(limit - len(out) + 1)
        )
        out.extend((eid, et, ek, fid, rid, bytes(rel)) for eid, et, ek, fid, rid, rel in rows)
        if len(out) > limit:
            break
    return out


def orphan_folders(
    conn: Connection, refs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, bytes]]:
    """{(type, key): (root_id, folder)}: the folder holding every gone file of each entity (what
    `importctl forget` settles), when they share one root."""
    out: dict[tuple[str, str], tuple[int, bytes]] = {}
    for etype, key in refs:
        rows = conn.execute(
            select(files.c.root_id, files.c.relpath)
            .join(entity_links, entity_links.c.file_id == files.c.id)
            .join(entities, entities.c.id == entity_links.c.entity_id)
            .where(entities.c.type == etype, entities.c.key == key, files.c.status != STATUS_FORGOTTEN)
        ).all()
        if not rows or len({rid for rid, _ in rows}) != 1:
            continue
        parents = [bytes(rel).split(b"/")[:-1] for _, rel in rows]
        common = parents[0]
        for parts in parents[1:]:
            n = 0
            while n < min(len(common), len(parts)) and common[n] == parts[n]:
                n += 1
            common = common[:n]
        out[(etype, key)] = (rows[0][0], b"/".join(common))
    return out


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
_OTHER = aliased(EntityRow)
_CONFLICT: tuple[Any, ...] = (
    *(getattr(ConflictRow, name) for name in ConflictRow.model_fields),
    col(EntityRow.type).label("entity_type"),
    col(EntityRow.name).label("entity_name"),
    col(_OTHER.name).label("other_name"),
)


async def conflict_rows(session: AsyncSession, status: str | None) -> list[dict[str, Any]]:
    stmt = (
        typed_select(*_CONFLICT)
        .join(EntityRow, col(EntityRow.id) == col(ConflictRow.entity_id))
        .outerjoin(_OTHER, col(_OTHER.id) == col(ConflictRow.other_entity_id))
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
