"""The gap report: what each entity still misses, and how complete the library is.

Expectations are set per entity type (`[expect.<type>]` in the config):

    attributes = ["age", "notes"]   each must hold a value (not null, not blank, not empty)
    roles = ["source_image"]        each needs at least one present file in that role
    scenes = ["intro", "dance"]     each needs a present `scene_video` file whose `scene_type`
                                    capture is that scene (compared case- and accent-spelling-blind)
    episodes = "contiguous"         per season, every episode from 1 to the highest linked
    episodes = 10                   per season, episodes 1 to 10 (season 1 if none is linked yet)

Episodes are the `season`/`episode` link attributes of files in the role `episode`; a file with
no season is in season 1; season 0 (specials) is never expected to be complete. A file that went
missing satisfies nothing, but still counts as "linked" for the highest episode number, so losing
the last episode opens a gap instead of silently shrinking the season. A forgotten file (settled by
the operator with `importctl forget`) counts for nothing at all.

Orphaned entities. An entity that had files and none of them is present any more is not a list
of N missing items: it is listed once, as orphaned, with the time its last file went missing,
whatever its type expects; it is left out of completeness, which counts such entities beside
it. An entity all of whose files were forgotten is retired: it leaves the report. An entity that
never had files (found in a table) is judged on its requirements as any other.

Completeness. Every (entity, expected item) pair is one requirement: one per required attribute,
per required role, per expected scene and per expected episode of each entity whose type has
expectations. A requirement is satisfied when the entity holds it as above. Completeness is
satisfied / required, shown as a percentage rounded *down* to one decimal (100.0 only when
nothing at all is missing) together with both counts; with no requirements it is 100.0.
The text and the JSON form carry the same figures.

`compute_report` recomputes from a full snapshot; `LiveGapReport` keeps the same report up to
date from events, each in time proportional to the one entity it touches (an expectations
change touches the entities of the changed types). Both give equal `GapReport`s.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, TypeAlias

from importctl.protocol import iso_utc
from importd.entities.expectations import CONTIGUOUS, Expectations, TypeExpectation
from importd.entities.keys import fold
from importd.entities.metadata import JsonValue, is_filled
from importd.entities.rules import ROLE_EPISODE, ROLE_SCENE_VIDEO, LinkValue

__all__ = [
    "KINDS",
    "AttributeSet",
    "Completeness",
    "EntityGaps",
    "EntityRef",
    "EntityRemoved",
    "EntityRenamed",
    "EntitySeen",
    "EntityState",
    "ExpectationsChanged",
    "FileForgotten",
    "FileId",
    "FileLinked",
    "FileMissing",
    "FileRestored",
    "FileUnlinked",
    "GapChange",
    "GapEvent",
    "GapReport",
    "LinkState",
    "LiveGapReport",
    "Missing",
    "Rename",
    "compute_report",
    "entity_gaps",
    "gap_text",
]

KINDS: Final = ("attribute", "role", "scene", "episode")

FileId: TypeAlias = str | int


# --- state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)  # one per linked file, for as long as the daemon runs
class LinkState:
    """One file's link to its entity: the rule's role and link attributes, whether the file is
    currently there, since when it is not, and whether the operator settled it as gone."""

    role: str
    attributes: Mapping[str, LinkValue] = field(default_factory=dict)
    present: bool = True
    missing_since: float | None = None
    forgotten: bool = False


@dataclass(frozen=True)
class EntityState:
    type: str
    key: str
    name: str
    attributes: Mapping[str, JsonValue] = field(default_factory=dict)
    links: Mapping[FileId, LinkState] = field(default_factory=dict)


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Missing:
    kind: str  # one of KINDS
    name: str


@dataclass(frozen=True)
class EntityGaps:
    """One entity's place in the report. An orphaned entity (`orphaned_since` set: when its last
    file went missing) requires nothing and misses nothing: it is listed once, on its own."""

    type: str
    name: str
    key: str
    satisfied: int
    required: int
    missing: tuple[Missing, ...]
    orphaned_since: float | None = None

    @property
    def orphaned(self) -> bool:
        return self.orphaned_since is not None

    @cached_property
    def sort_key(self) -> tuple[str, str, str, str]:
        # Accents aside first, so "Élodie" sorts among the e's and not after "Zoé".
        plain = "".join(
            c for c in unicodedata.normalize("NFD", fold(self.name)) if not unicodedata.combining(c)
        )
        return (self.type, plain, fold(self.name), self.key)


@dataclass(frozen=True)
class Completeness:
    satisfied: int
    required: int
    orphaned: int = 0  # entities left out: all their files gone

    @property
    def percent(self) -> float:
        if self.required == 0:
            return 100.0
        return (self.satisfied * 1000 // self.required) / 10

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "satisfied": self.satisfied,
            "required": self.required,
            "orphaned": self.orphaned,
        }


@dataclass(frozen=True)
class GapReport:
    """Every entity that has at least one requirement, sorted by type, name (accents and case
    aside) and key."""

    entities: tuple[EntityGaps, ...] = ()

    @property
    def completeness(self) -> Completeness:
        return Completeness(
            satisfied=sum(e.satisfied for e in self.entities),
            required=sum(e.required for e in self.entities),
            orphaned=sum(1 for e in self.entities if e.orphaned),
        )

    @property
    def orphaned(self) -> tuple[EntityGaps, ...]:
        return tuple(e for e in self.entities if e.orphaned)

    def totals(self) -> dict[str, int]:
        """Missing items per kind."""
        counts = dict.fromkeys(KINDS, 0)
        for entity in self.entities:
            for item in entity.missing:
                counts[item.kind] += 1
        return counts

    def only(self, *, entity_type: str | None = None, name: str | None = None) -> GapReport:
        """The report narrowed to one type and/or one entity name (spelling-blind)."""
        wanted = fold(name) if name is not None else None
        return GapReport(
            tuple(
                e
                for e in self.entities
                if (entity_type is None or e.type == entity_type)
                and (wanted is None or fold(e.name) == wanted)
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "completeness": self.completeness.to_json(),
            "totals": self.totals(),
            "entities": [
                {
                    "type": e.type,
                    "name": e.name,
                    "missing": [{"kind": m.kind, "name": m.name} for m in e.missing],
                }
                for e in self.entities
                if e.missing
            ],
            "orphaned": [
                {"type": e.type, "name": e.name, "since": iso_utc(e.orphaned_since)} for e in self.orphaned
            ],
        }

    def to_text(self) -> str:
        return gap_text(self.to_json())


def gap_text(report: Mapping[str, Any]) -> str:
    """The operator's checklist, rendered from the JSON form (also a stored run's), so text and
    JSON cannot disagree."""
    c = report["completeness"]
    orphaned = f"; {c['orphaned']} orphaned left out" if c.get("orphaned") else ""
    lines = [
        f"Completeness: {c['percent']:.1f}% ({c['satisfied']} of {c['required']} requirements "
        f"satisfied{orphaned})"
    ]
    totals = report.get("totals")
    if totals:
        lines.append("Missing by kind: " + ", ".join(f"{kind} {totals.get(kind, 0)}" for kind in KINDS))
    entities = report["entities"]
    if not entities:
        lines.append("Nothing missing.")
    for entity in entities:
        lines.append("")
        lines.append(f"{entity['type']}: {entity['name']}")
        lines.extend(f"  ☐ {item['kind']} {item['name']}" for item in entity["missing"])
    for orphan in report.get("orphaned", ()):
        lines.append("")
        lines.append(f"{orphan['type']}: {orphan['name']}: all files gone since {orphan['since']}")
    return "\n".join(lines) + "\n"


def entity_gaps(
    entity_type: str,
    key: str,
    name: str,
    attributes: Mapping[str, JsonValue],
    links: Iterable[LinkState],
    expectation: TypeExpectation | None,
) -> EntityGaps | None:
    """One entity's requirements and what it misses; None when its type expects nothing, or when
    every file it had was forgotten (retired). Orphaned when it had files and none is present."""
    had_files = False
    counted: list[LinkState] = []
    for link in links:
        had_files = True
        if not link.forgotten:
            counted.append(link)
    if had_files and not counted:
        return None
    if counted and all(link.missing_since is not None for link in counted):
        # None present (a missing file has `missing_since`), and none merely unreadable.
        since = max(link.missing_since or 0.0 for link in counted)
        return EntityGaps(entity_type, name, key, 0, 0, (), since)
    if expectation is None:
        return None
    links = counted
    missing: list[Missing] = []
    required = 0
    if expectation.attributes:
        filled = {fold(k) for k, v in attributes.items() if is_filled(v)}
        required += len(expectation.attributes)
        missing.extend(Missing("attribute", a) for a in expectation.attributes if fold(a) not in filled)
    needs_links = expectation.roles or expectation.scenes or expectation.episodes is not None
    if needs_links:
        roles: set[str] = set()
        scenes: set[str] = set()
        highest: dict[int, int] = {}  # season -> highest episode linked, present or not
        episodes: set[tuple[int, int]] = set()  # present (season, episode)
        for link in links:
            if link.present:
                roles.add(link.role)
            if link.role == ROLE_SCENE_VIDEO and link.present and "scene_type" in link.attributes:
                scenes.add(fold(str(link.attributes["scene_type"])))
            elif link.role == ROLE_EPISODE:
                episode = _number(link.attributes.get("episode"))
                if episode is None or episode < 1:
                    continue
                season = _number(link.attributes.get("season"))
                season = 1 if season is None else season
                highest[season] = max(highest.get(season, 0), episode)
                if link.present:
                    episodes.add((season, episode))
        required += len(expectation.roles) + len(expectation.scenes)
        missing.extend(Missing("role", r) for r in expectation.roles if r not in roles)
        missing.extend(Missing("scene", s) for s in expectation.scenes if fold(s) not in scenes)
        if expectation.episodes is not None:
            if expectation.episodes == CONTIGUOUS:
                expected = {s: h for s, h in highest.items() if s >= 1}
            else:
                expected = dict.fromkeys([s for s in highest if s >= 1] or [1], expectation.episodes)
            for season in sorted(expected):
                required += expected[season]
                missing.extend(
                    Missing("episode", f"S{season:02d}E{e:02d}")
                    for e in range(1, expected[season] + 1)
                    if (season, e) not in episodes
                )
    if required == 0:
        return None
    return EntityGaps(entity_type, name, key, required - len(missing), required, tuple(missing))


def _sort_key(gaps: EntityGaps) -> tuple[str, str, str, str]:
    return gaps.sort_key


def _number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def compute_report(entities: Iterable[EntityState], expectations: Expectations) -> GapReport:
    gaps = []
    for e in entities:
        g = entity_gaps(e.type, e.key, e.name, e.attributes, e.links.values(), expectations.for_type(e.type))
        if g is not None:
            gaps.append(g)
    return GapReport(tuple(sorted(gaps, key=_sort_key)))


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityRef:
    """Who an event is about; `name` is used when the event creates the entity."""

    type: str
    key: str
    name: str


@dataclass(frozen=True)
class EntitySeen:
    """The entity exists, with this display name (created, or renamed)."""

    entity: EntityRef


@dataclass(frozen=True)
class EntityRemoved:
    type: str
    key: str


@dataclass(frozen=True)
class EntityRenamed:
    """The entity found under `old_key` is now `entity` (its files moved to a new folder): same
    entity, new key and name."""

    old_key: str
    entity: EntityRef


@dataclass(frozen=True)
class FileLinked:
    """A file now belongs to this entity (it leaves any entity it belonged to before)."""

    file_id: FileId
    entity: EntityRef
    link: LinkState


@dataclass(frozen=True)
class FileUnlinked:
    file_id: FileId


@dataclass(frozen=True)
class FileMissing:
    file_id: FileId
    since: float | None = None


@dataclass(frozen=True)
class FileForgotten:
    """Settled by the operator as gone (`importctl forget`): it counts for nothing, yet the
    entity remembers it had it."""

    file_id: FileId


@dataclass(frozen=True)
class FileRestored:
    file_id: FileId


@dataclass(frozen=True)
class AttributeSet:
    """An attribute's new value; None clears it."""

    entity: EntityRef
    attribute: str
    value: JsonValue


@dataclass(frozen=True)
class ExpectationsChanged:
    expectations: Expectations


GapEvent: TypeAlias = (
    EntitySeen
    | EntityRemoved
    | EntityRenamed
    | FileLinked
    | FileUnlinked
    | FileMissing
    | FileForgotten
    | FileRestored
    | AttributeSet
    | ExpectationsChanged
)


@dataclass(frozen=True)
class Rename:
    type: str
    old_name: str
    new_name: str


@dataclass(frozen=True)
class GapChange:
    """An entity's gaps before and after an event (None: it had/has no requirements); `rename`
    when the event renamed it (announced even for a type that expects nothing)."""

    before: EntityGaps | None
    after: EntityGaps | None
    rename: Rename | None = None


@dataclass
class _Entity:
    name: str
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    links: dict[FileId, LinkState] = field(default_factory=dict)


_Id: TypeAlias = tuple[str, str]  # (type, key)


class LiveGapReport:
    """The gap report kept current from events; `report()` equals `compute_report` over the
    same state. Events about unknown files are ignored (they were never linked)."""

    def __init__(self, expectations: Expectations, entities: Iterable[EntityState] = ()) -> None:
        self._expectations = expectations
        self._entities: dict[_Id, _Entity] = {}
        self._by_type: dict[str, set[str]] = {}
        self._file_owner: dict[FileId, _Id] = {}
        self._gaps: dict[_Id, EntityGaps] = {}
        self._satisfied = 0
        self._required = 0
        self._orphaned = 0
        self._sorted: GapReport | None = None
        for state in entities:
            entity = self._ensure(EntityRef(state.type, state.key, state.name))
            entity.attributes.update({fold(k): v for k, v in state.attributes.items() if v is not None})
            for file_id, link in state.links.items():
                entity.links[file_id] = link
                self._file_owner[file_id] = (state.type, state.key)
            self._refresh((state.type, state.key))

    @property
    def expectations(self) -> Expectations:
        return self._expectations

    def completeness(self) -> Completeness:
        return Completeness(self._satisfied, self._required, self._orphaned)

    def report(self) -> GapReport:
        if self._sorted is None:
            self._sorted = GapReport(tuple(sorted(self._gaps.values(), key=_sort_key)))
        return self._sorted

    def entity(self, entity_type: str, key: str) -> EntityGaps | None:
        return self._gaps.get((entity_type, key))

    def attributes_of(self, entity_type: str, key: str) -> Mapping[str, JsonValue] | None:
        """The attributes the report holds of an entity (by folded name); None: not in it."""
        entity = self._entities.get((entity_type, key))
        return None if entity is None else entity.attributes

    def apply(self, event: GapEvent) -> list[GapChange]:
        """Apply one event; the entities whose gaps changed, before and after."""
        match event:
            case EntitySeen(entity=ref):
                self._ensure(ref).name = ref.name
                return self._refresh((ref.type, ref.key))
            case EntityRemoved(type=entity_type, key=key):
                return self._remove((entity_type, key))
            case EntityRenamed(old_key=old_key, entity=ref):
                return self._rename((ref.type, old_key), ref)
            case FileLinked(file_id=file_id, entity=ref, link=link):
                owner = self._file_owner.get(file_id)
                changes = self._unlink(file_id) if owner != (ref.type, ref.key) else []
                self._ensure(ref).links[file_id] = link
                self._file_owner[file_id] = (ref.type, ref.key)
                return changes + self._refresh((ref.type, ref.key))
            case FileUnlinked(file_id=file_id):
                return self._unlink(file_id)
            case FileMissing(file_id=file_id, since=since):
                return self._set_present(file_id, False, since)
            case FileRestored(file_id=file_id):
                return self._set_present(file_id, True, None)
            case FileForgotten(file_id=file_id):
                return self._forget(file_id)
            case AttributeSet(entity=ref, attribute=attribute, value=value):
                attributes = self._ensure(ref).attributes
                if value is None:
                    attributes.pop(fold(attribute), None)
                else:
                    attributes[fold(attribute)] = value
                return self._refresh((ref.type, ref.key))
            case ExpectationsChanged(expectations=expectations):
                return self._set_expectations(expectations)
        raise TypeError(f"not a gap event: {event!r}")

    def _ensure(self, ref: EntityRef) -> _Entity:
        ident = (ref.type, ref.key)
        entity = self._entities.get(ident)
        if entity is None:
            entity = self._entities[ident] = _Entity(ref.name)
            self._by_type.setdefault(ref.type, set()).add(ref.key)
        return entity

    def _remove(self, ident: _Id) -> list[GapChange]:
        entity = self._entities.pop(ident, None)
        if entity is None:
            return []
        for file_id in entity.links:
            del self._file_owner[file_id]
        self._by_type[ident[0]].discard(ident[1])
        return self._store(ident, None)

    def _rename(self, old: _Id, ref: EntityRef) -> list[GapChange]:
        entity = self._entities.pop(old, None)
        if entity is None:
            self._ensure(ref)
            return self._refresh((ref.type, ref.key))
        new = (ref.type, ref.key)
        rename = Rename(ref.type, entity.name, ref.name)
        before = self._gaps.get(old)
        self._by_type[old[0]].discard(old[1])
        self._store(old, None)
        into = self._entities.get(new)
        if into is not None:  # never expected (the catalog checked), but never lose links
            into.links.update(entity.links)
            into.attributes = {**entity.attributes, **into.attributes}
            entity = into
        entity.name = ref.name
        self._entities[new] = entity
        self._by_type.setdefault(ref.type, set()).add(ref.key)
        for file_id in entity.links:
            self._file_owner[file_id] = new
        self._refresh(new)
        return [GapChange(before, self._gaps.get(new), rename)]

    def _unlink(self, file_id: FileId) -> list[GapChange]:
        owner = self._file_owner.pop(file_id, None)
        if owner is None:
            return []
        del self._entities[owner].links[file_id]
        return self._refresh(owner)

    def _set_present(self, file_id: FileId, present: bool, since: float | None) -> list[GapChange]:
        owner = self._file_owner.get(file_id)
        if owner is None:
            return []
        links = self._entities[owner].links
        link = links[file_id]
        if link.present == present and not link.forgotten:
            return []
        links[file_id] = LinkState(link.role, link.attributes, present, None if present else since)
        return self._refresh(owner)

    def _forget(self, file_id: FileId) -> list[GapChange]:
        owner = self._file_owner.get(file_id)
        if owner is None:
            return []
        links = self._entities[owner].links
        link = links[file_id]
        links[file_id] = LinkState(link.role, link.attributes, False, link.missing_since, forgotten=True)
        return self._refresh(owner)

    def _set_expectations(self, expectations: Expectations) -> list[GapChange]:
        old = self._expectations
        self._expectations = expectations
        changed_types = {
            t
            for t in set(old.by_type) | set(expectations.by_type)
            if old.for_type(t) != expectations.for_type(t)
        }
        changes: list[GapChange] = []
        for entity_type in sorted(changed_types):
            for key in sorted(self._by_type.get(entity_type, ())):
                changes.extend(self._refresh((entity_type, key)))
        return changes

    def _refresh(self, ident: _Id) -> list[GapChange]:
        entity = self._entities[ident]
        gaps = entity_gaps(
            ident[0],
            ident[1],
            entity.name,
            entity.attributes,
            entity.links.values(),
            self._expectations.for_type(ident[0]),
        )
        return self._store(ident, gaps)

    def _store(self, ident: _Id, gaps: EntityGaps | None) -> list[GapChange]:
        before = self._gaps.get(ident)
        if before == gaps:
            return []
        if before is not None:
            self._satisfied -= before.satisfied
            self._required -= before.required
            self._orphaned -= before.orphaned
            del self._gaps[ident]
        if gaps is not None:
            self._satisfied += gaps.satisfied
            self._required += gaps.required
            self._orphaned += gaps.orphaned
            self._gaps[ident] = gaps
        self._sorted = None
        return [GapChange(before, gaps)]
