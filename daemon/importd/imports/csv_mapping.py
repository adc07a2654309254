"""A spreadsheet's columns as entity fields: which column is the key, which one names the
entity, which ones are attributes; each row read into typed values (`[fields]` rules) with its
errors, and planned against what the entity holds now. Pure: the catalog side
(`catalog/imports.py`) finds the entities and writes.

Key modes (`--key`), as the rule sets' `match_key` (see `entities/keys.py`):
- `name` (default): the column mapped to `name` holds the entity's name; the entity of the type
  whose name key is that name folded (case, accents' spelling, spacing aside).
- `id`: the column mapped to `id` holds the id a `metadata.json` gives (`id:` keys).
- `path`: the column mapped to `path` holds the entity's folder, absolute or relative to a root.
In the `id` and `path` modes a column mapped to `name` names an entity the import creates.
Every other mapped column is an attribute (its name folded, like every attribute name).

A blank cell is no value: it never erases one. A differing value is a conflict unless the
import overwrites.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from importd.entities import (
    FieldFailure,
    FieldRules,
    JsonValue,
    check_field,
    fold,
    is_filled,
    same_value,
)

__all__ = [
    "ACTIONS",
    "KEY_MODES",
    "BoundColumns",
    "Change",
    "CsvImportSpec",
    "MappingError",
    "ParsedRow",
    "RowPlan",
    "SeenKeys",
    "bind_columns",
    "entity_key",
    "file_key",
    "parse_row",
    "plan_row",
]

KEY_MODES: Final = ("name", "path", "id")
ACTIONS: Final = ("create", "update", "unchanged", "invalid", "conflict", "unmatched")
NAME_FIELD: Final = "name"


class MappingError(ValueError):
    """A mapping that cannot be applied to this file at all (an unknown column, no key column)."""


@dataclass(frozen=True)
class CsvImportSpec:
    entity_type: str
    key_mode: str
    columns: tuple[tuple[str, str], ...]  # (column as the operator spelled it, field)
    create: bool = False
    overwrite: bool = False

    def key_field(self) -> str:
        return self.key_mode


@dataclass(frozen=True)
class BoundColumns:
    """Mapped columns by index in the file: (index, column as the header spells it)."""

    key: tuple[int, str]
    name: tuple[int, str] | None
    attributes: tuple[tuple[int, str, str], ...]  # (index, column, field)
    width: int


def bind_columns(header: Sequence[str], spec: CsvImportSpec) -> BoundColumns:
    folded = [fold(cell) for cell in header]
    fields: dict[str, tuple[int, str]] = {}
    for column, target in spec.columns:
        wanted = fold(column)
        where = [i for i, h in enumerate(folded) if h == wanted]
        if not where:
            shown = ", ".join(repr(h.strip()) for h in header if h.strip())
            raise MappingError(f"no column {column!r} in the file (columns: {shown})")
        if len(where) > 1:
            raise MappingError(f"column {column!r} appears {len(where)} times in the header")
        name = fold(target)
        if not name:
            raise MappingError(f"column {column!r} maps to an empty field name")
        if name in fields:
            raise MappingError(f"field {name!r} is mapped from two columns ({fields[name][1]!r}, {column!r})")
        fields[name] = (where[0], header[where[0]].strip())
    key_field = spec.key_field()
    if key_field not in fields:
        raise MappingError(
            f"--key {spec.key_mode} needs a column mapped to {key_field!r} (--map COLUMN={key_field})"
        )
    reserved = {NAME_FIELD, key_field}
    return BoundColumns(
        key=fields[key_field],
        name=fields.get(NAME_FIELD),
        attributes=tuple((i, col, f) for f, (i, col) in fields.items() if f not in reserved),
        width=len(header),
    )


@dataclass
class ParsedRow:
    row: int
    key: str  # the key cell as written (stripped); "" when blank
    name: str | None  # the name cell, in the id and path modes
    key_column: str = ""
    values: dict[str, JsonValue] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # field -> column, for messages
    errors: list[tuple[str, str]] = field(default_factory=list)  # (column, message)


def parse_row(
    cols: BoundColumns, rules: FieldRules, entity_type: str, row: int, cells: Sequence[str]
) -> ParsedRow:
    def cell(index: int) -> str:
        return cells[index].strip() if index < len(cells) else ""

    parsed = ParsedRow(row, cell(cols.key[0]), cell(cols.name[0]) if cols.name else None, cols.key[1])
    if len(cells) > cols.width and any(c.strip() for c in cells[cols.width :]):
        parsed.errors.append(("", f"{len(cells)} cells for {cols.width} columns"))
    if not parsed.key:
        parsed.errors.append((cols.key[1], "no key: the cell is blank"))
    for index, column, name in cols.attributes:
        text = cell(index)
        parsed.columns[name] = column
        if not text:
            continue  # no value, not "erase"
        value = check_field(rules.spec(entity_type, name), text)
        if isinstance(value, FieldFailure):
            parsed.errors.append((column, value.message))
        else:
            parsed.values[name] = value
    return parsed


# Every row's key is folded once or twice and never again: kept out of `fold`'s cache, which
# would otherwise hold the last 65,536 names of a big file (the only memory that grew with it).
_fold_once = fold.__wrapped__


def entity_key(mode: str, text: str) -> str | None:
    """The catalog key the `name` and `id` modes look for: `keys.name_key` and `keys.id_key`."""
    folded = _fold_once(text)
    if mode == "name":
        return "name:" + folded
    return "id:" + folded if folded else None


def file_key(mode: str, text: str) -> str | None:
    """What makes two rows of one file the same entity: the folded key."""
    if mode in ("name", "id"):
        return entity_key(mode, text)
    parts = [fold(p) for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    return "path:" + "/".join(parts) if parts else None


@dataclass(frozen=True)
class Change:
    field: str
    current: JsonValue
    proposed: JsonValue
    conflict: bool  # a differing value the import does not overwrite


@dataclass(frozen=True)
class RowPlan:
    action: str
    changes: tuple[Change, ...]
    errors: tuple[tuple[str, str], ...] = ()


def plan_row(
    current: Mapping[str, JsonValue] | None,
    parsed: ParsedRow,
    rules: FieldRules,
    entity_type: str,
    *,
    overwrite: bool,
) -> RowPlan:
    """What the row does to the entity holding `current` (None: the import creates it)."""
    held = current or {}
    spelled = {fold(name): name for name in held}
    changes: list[Change] = []
    for name, proposed in parsed.values.items():
        now = held.get(spelled.get(name, name))
        if is_filled(now) and same_value(now, proposed):
            continue
        changes.append(Change(spelled.get(name, name), now, proposed, is_filled(now) and not overwrite))
    after = {fold(n) for n, v in held.items() if is_filled(v)} | set(parsed.values)
    missing = [name for name in rules.required(entity_type) if name not in after]
    if missing:
        errors = tuple((parsed.columns.get(name, ""), f"{name} is required") for name in missing)
        return RowPlan("invalid", (), errors)
    if current is None:
        return RowPlan("create", tuple(changes))
    if any(c.conflict for c in changes):
        return RowPlan("conflict", tuple(changes))
    return RowPlan("update" if changes else "unchanged", tuple(changes))


class SeenKeys:
    """The keys a file has given so far, each with the row that gave it first, by a 64-bit hash
    of the folded key (two keys sharing one is a 1-in-2^64 chance per pair).

    An open-addressing table in two flat arrays: 16 bytes a slot and no Python object per row.
    A dict of ints cost 120 bytes a row, and those small objects, mixed in the allocator's
    arenas with every batch's short-lived ones, kept the arenas from being given back: the
    daemon's peak grew with the file."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._hashes = array("q", bytes(8 * capacity))
        self._rows = array("q", bytes(8 * capacity))
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first(self, key: str, row: int) -> int:
        """The first row that gave `key`: `row` itself when none did before."""
        digest = hash(key) or 1  # 0 marks a free slot
        mask = len(self._hashes) - 1
        slot = digest & mask
        while self._hashes[slot]:
            if self._hashes[slot] == digest:
                return self._rows[slot]
            slot = (slot + 1) & mask
        self._hashes[slot] = digest
        self._rows[slot] = row
        self._count += 1
        if self._count * 2 > len(self._hashes):
            self._grow()
        return row

    def _grow(self) -> None:
        hashes, rows = self._hashes, self._rows
        self._hashes = array("q", bytes(16 * len(hashes)))
        self._rows = array("q", bytes(16 * len(rows)))
        mask = len(self._hashes) - 1
        for digest, row in zip(hashes, rows, strict=True):
            if digest:
                slot = digest & mask
                while self._hashes[slot]:
                    slot = (slot + 1) & mask
                self._hashes[slot] = digest
                self._rows[slot] = row
