"""What a rule set would make of a tree, before it applies: `importctl preview`.

Pure: the caller walks the tree (as a reconcile would, ignore rules included), reads the small
metadata files the rules point at, and looks up the entities the catalog already holds; this
module maps each path, gathers each entity's files by role and incoming attributes, judges each
entity (create, update, unchanged) against the catalog's, and builds the gap report that would
result, with the same expectations. Nothing is written anywhere.

An entity is `update` when the preview would fill one of its empty attributes or link a file it
does not have yet; a value that differs from the one it holds is listed among its changes as a
conflict (it would never be applied silently), which alone does not make it an update.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from importd.entities.expectations import Expectations
from importd.entities.gaps import EntityState, FileId, GapReport, LinkState, compute_report
from importd.entities.keys import name_key
from importd.entities.metadata import (
    Attributes,
    JsonValue,
    MetadataFailure,
    TableRows,
    is_filled,
    merge_attributes,
    read_metadata_json,
    read_sidecar,
    read_table,
    same_value,
)
from importd.entities.rules import PathMapping, RuleSet
from importd.paths import display, wire

READ_ROLES = ("metadata", "sidecar", "table")
_Key = tuple[str, str]  # (type, key)


@dataclass
class PreviewEntity:
    type: str
    key: str
    name: str
    roles: Counter[str] = field(default_factory=Counter)
    incoming: dict[str, JsonValue] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # attribute -> the file it came from
    files: set[bytes] = field(default_factory=set)
    links: dict[bytes, LinkState] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class PreviewTree:
    """The first pass: every mapped entity, the roles, the unmatched files by folder."""

    files: int = 0
    mapped: int = 0
    entities: dict[_Key, PreviewEntity] = field(default_factory=dict)
    roles: Counter[str] = field(default_factory=Counter)
    unmatched_by_folder: Counter[str] = field(default_factory=Counter)
    reads: list[tuple[bytes, PathMapping]] = field(default_factory=list)  # files to read


def map_paths(relpaths: Iterable[bytes], rule_set: RuleSet, root_id: int) -> PreviewTree:
    tree = PreviewTree()
    for relpath in relpaths:
        tree.files += 1
        mapping = rule_set.map_path(wire(relpath))
        if mapping is None:
            folder = relpath.rsplit(b"/", 1)[0] if b"/" in relpath else b""
            tree.unmatched_by_folder[display(folder) or "."] += 1
            continue
        if mapping.match_key == "path" and mapping.key:
            mapping = mapping.with_key(f"root{root_id}/{mapping.key}")
        tree.mapped += 1
        tree.roles[mapping.role] += 1
        if mapping.role in READ_ROLES:
            tree.reads.append((relpath, mapping))
        if mapping.role == "table" or not mapping.key or mapping.entity_name is None:
            continue
        entity = _entity(tree, mapping.entity_type, mapping.key, mapping.entity_name)
        entity.roles[mapping.role] += 1
        entity.files.add(relpath)
        entity.links[relpath] = LinkState(mapping.role, mapping.link_attributes, True)
        _take(entity, dict(mapping.entity_attributes), display(relpath))
    return tree


def read_into(
    tree: PreviewTree, relpath: bytes, mapping: PathMapping, content: bytes | None, error: str | None
) -> None:
    """Apply one metadata file's content (`content` None: it could not be read, `error` says why)."""
    where = display(relpath)
    entity = tree.entities.get((mapping.entity_type, mapping.key or ""))
    if content is None:
        if entity is not None:
            entity.errors.append(f"{where}: {error or 'not read'}")
        return
    if mapping.role == "table":
        parsed_table = read_table(content)
        if isinstance(parsed_table, TableRows):
            for name, attrs in parsed_table.rows:
                _take(_entity(tree, mapping.entity_type, name_key(name), name), attrs, where)
        return
    if entity is None:
        return
    parsed = (
        read_sidecar(content, mapping.attribute or "notes")
        if mapping.role == "sidecar"
        else read_metadata_json(content)
    )
    if isinstance(parsed, MetadataFailure):
        entity.errors.append(f"{where}: {parsed.reason}")
    elif isinstance(parsed, Attributes):
        _take(entity, parsed.values, where)


@dataclass(frozen=True)
class Change:
    field: str
    current: JsonValue
    proposed: JsonValue
    conflict: bool  # differs from the value held: would be a conflict, never applied


@dataclass(frozen=True)
class Judged:
    entity: PreviewEntity
    action: str  # create | update | unchanged
    changes: tuple[Change, ...]
    new_files: int


def judge(
    tree: PreviewTree,
    existing: Mapping[_Key, tuple[str, Mapping[str, JsonValue]]],
    linked: Callable[[_Key], set[bytes]],
) -> list[Judged]:
    """Each entity against what the catalog holds: `existing` {(type, key): (name, attributes)},
    `linked(key)` the relpaths of the files already linked to it."""
    out: list[Judged] = []
    for ident, entity in sorted(tree.entities.items(), key=lambda kv: (kv[0][0], kv[1].name.casefold())):
        held = existing.get(ident)
        if held is None:
            changes = tuple(Change(k, None, v, False) for k, v in sorted(entity.incoming.items()))
            out.append(Judged(entity, "create", changes, len(entity.files)))
            continue
        merged = merge_attributes(held[1], entity.incoming, entity=entity.name, source="preview")
        filled = [
            Change(k, held[1].get(k), v, False)
            for k, v in merged.merged.items()
            if not same_value(held[1].get(k), v)
        ]
        conflicts = [Change(c.attribute, c.current, c.proposed, True) for c in merged.conflicts]
        new_files = len(entity.files - linked(ident))
        action = "update" if filled or new_files else "unchanged"
        out.append(
            Judged(entity, action, tuple(sorted(filled + conflicts, key=lambda c: c.field)), new_files)
        )
    return out


def resulting_report(
    judged: Iterable[Judged],
    existing: Mapping[_Key, tuple[str, Mapping[str, JsonValue]]],
    expectations: Expectations,
) -> GapReport:
    """The gap report of the previewed entities as they would be: the catalog's attributes with
    the empty ones filled, and the tree's files as their links."""
    states = []
    for j in judged:
        e = j.entity
        held = existing.get((e.type, e.key))
        attributes = dict(held[1]) if held else {}
        for change in j.changes:
            if not change.conflict:
                attributes[change.field] = change.proposed
        links: dict[FileId, LinkState] = {wire(rel): link for rel, link in e.links.items()}
        states.append(EntityState(e.type, e.key, held[0] if held else e.name, attributes, links))
    return compute_report(states, expectations)


def _entity(tree: PreviewTree, etype: str, key: str, name: str) -> PreviewEntity:
    entity = tree.entities.get((etype, key))
    if entity is None:
        entity = tree.entities[(etype, key)] = PreviewEntity(etype, key, name)
    return entity


def _take(entity: PreviewEntity, values: Mapping[str, JsonValue], source: str) -> None:
    merged = merge_attributes(entity.incoming, values, entity=entity.name, source=source)
    for name, value in merged.merged.items():
        if name not in entity.incoming and is_filled(value):
            entity.sources[name] = source
    entity.incoming = dict(merged.merged)
