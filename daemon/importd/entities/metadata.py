"""Entity attributes from metadata files, and merging them without losing anything.

Readers take the file's bytes (the caller does the I/O) and return either `Attributes` or a
`MetadataFailure` carrying the reason; nothing raises.

- `metadata.json`: a JSON object; its keys are attributes, values kept as JSON values. UTF-8
  with or without a BOM. A key given twice is a failure, not a silent "last one wins".
- sidecar: a text file whose whole (stripped) text is one attribute, e.g. `notes.txt`.
- CSV table: a header row with a `name` column (or the one given), one row per entity; `,`, `;`
  or tab separated (French spreadsheets export `;`).

Attribute names are folded (`keys.fold`: case and Unicode spelling), so "Age" in one file and
"age" in another are one attribute and satisfy the expectation `age`. A null value or blank
text means "not given" and is dropped.

`merge_attributes` never overwrites: a value that differs from the one already held becomes a
`Conflict` for an operator to settle with `resolve_conflict` (keep or take the new value).
Values compare after light normalisation: text is NFC and stripped, and a number equals its
decimal text (`30` and `"30"` from a CSV are the same age).
"""

from __future__ import annotations

import csv
import io
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from importd.entities.keys import fold

__all__ = [
    "AttributeMerge",
    "Attributes",
    "Conflict",
    "JsonValue",
    "MetadataFailure",
    "Resolution",
    "ResolveFailure",
    "TableRows",
    "is_filled",
    "merge_attributes",
    "read_metadata_json",
    "read_sidecar",
    "read_table",
    "resolve_conflict",
    "same_value",
]

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
Resolution = Literal["keep", "take_new"]


@dataclass(frozen=True)
class MetadataFailure:
    reason: str


@dataclass(frozen=True)
class Attributes:
    values: dict[str, JsonValue]


@dataclass(frozen=True)
class TableRows:
    """(entity name as written, its attributes) per row, in file order."""

    rows: tuple[tuple[str, dict[str, JsonValue]], ...]


@dataclass(frozen=True)
class Conflict:
    entity: str
    attribute: str
    current: JsonValue
    proposed: JsonValue
    source: str  # where the proposed value comes from, e.g. "Élodie/metadata.json"


class AttributeMerge(NamedTuple):
    merged: dict[str, JsonValue]
    conflicts: list[Conflict]


@dataclass(frozen=True)
class ResolveFailure:
    reason: str


class _DuplicateKey(Exception):
    pass


def read_metadata_json(data: bytes) -> Attributes | MetadataFailure:
    text = _decode(data)
    if isinstance(text, MetadataFailure):
        return text
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        return MetadataFailure(f"key {exc.args[0]!r} appears twice")
    except (json.JSONDecodeError, RecursionError) as exc:
        return MetadataFailure(f"invalid JSON: {exc}")
    if not isinstance(parsed, dict):
        return MetadataFailure(f"expected a JSON object, got {type(parsed).__name__}")
    return _attributes(parsed.items())


def read_sidecar(data: bytes, attribute: str) -> Attributes | MetadataFailure:
    text = _decode(data)
    if isinstance(text, MetadataFailure):
        return text
    value = unicodedata.normalize("NFC", text).strip()
    return Attributes({fold(attribute): value} if value else {})


def read_table(data: bytes, key_column: str = "name") -> TableRows | MetadataFailure:
    text = _decode(data)
    if isinstance(text, MetadataFailure):
        return text
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        return MetadataFailure(f"invalid CSV: {exc}")
    if not rows:
        return TableRows(())
    header = [fold(cell) for cell in rows[0]]
    duplicates = sorted({h for h in header if header.count(h) > 1 and h})
    if duplicates:
        return MetadataFailure(f"column {duplicates[0]!r} appears twice")
    if fold(key_column) not in header:
        return MetadataFailure(f"no {key_column!r} column (columns: {', '.join(header)})")
    key_index = header.index(fold(key_column))
    out: list[tuple[str, dict[str, JsonValue]]] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            return MetadataFailure(f"row {line} has {len(row)} cells for {len(header)} columns")
        name = row[key_index].strip() if key_index < len(row) else ""
        if not name:
            return MetadataFailure(f"row {line} has no {key_column!r}")
        cells = [(header[i], cell) for i, cell in enumerate(row) if i != key_index and header[i]]
        attributes = _attributes(cells)
        if isinstance(attributes, MetadataFailure):
            return MetadataFailure(f"row {line}: {attributes.reason}")
        out.append((name, attributes.values))
    return TableRows(tuple(out))


def is_filled(value: JsonValue) -> bool:
    """Whether a value satisfies a required attribute: not null, not blank text, not empty."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | dict):
        return bool(value)
    return True


def same_value(a: JsonValue, b: JsonValue) -> bool:
    return _comparable(a) == _comparable(b)


def merge_attributes(
    existing: Mapping[str, JsonValue], incoming: Mapping[str, JsonValue], *, entity: str, source: str
) -> AttributeMerge:
    """`existing` with `incoming` added where it fills a gap; each differing value is a conflict
    and the existing value stays. Incoming names are folded like the readers fold them."""
    merged = dict(existing)
    conflicts: list[Conflict] = []
    folded_names = {fold(name): name for name in existing}
    for raw_name, proposed in incoming.items():
        name = folded_names.get(fold(raw_name), fold(raw_name))
        if not is_filled(proposed):
            continue
        current = merged.get(name)
        if not is_filled(current):
            merged[name] = proposed
        elif not same_value(current, proposed):
            conflicts.append(Conflict(entity, name, current, proposed, source))
    return AttributeMerge(merged, conflicts)


def resolve_conflict(
    attributes: Mapping[str, JsonValue], conflict: Conflict, resolution: Resolution
) -> dict[str, JsonValue] | ResolveFailure:
    """The attributes after settling `conflict`; a failure if the value moved on meanwhile."""
    if resolution not in ("keep", "take_new"):
        return ResolveFailure(f"resolution must be 'keep' or 'take_new', not {resolution!r}")
    current = attributes.get(conflict.attribute)
    if not same_value(current, conflict.current):
        return ResolveFailure(
            f"{conflict.attribute!r} is now {current!r}, no longer {conflict.current!r}: "
            "the conflict is stale"
        )
    out = dict(attributes)
    if resolution == "take_new":
        out[conflict.attribute] = conflict.proposed
    return out


def _decode(data: bytes) -> str | MetadataFailure:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return MetadataFailure(f"not UTF-8 text (byte {exc.start})")


def _no_duplicates(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _attributes(pairs: Iterable[tuple[str, JsonValue]]) -> Attributes | MetadataFailure:
    values: dict[str, JsonValue] = {}
    for raw_name, value in pairs:
        name = fold(raw_name)
        if name in values:
            return MetadataFailure(f"attribute {name!r} is given twice (names ignore case and accents)")
        if not name or not is_filled(value):
            continue
        values[name] = unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else value
    return Attributes(values)


def _comparable(value: JsonValue) -> object:
    if isinstance(value, bool) or value is None:
        return ("constant", value)  # keeps true apart from 1
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else ("non-finite", repr(value))
    if isinstance(value, str):
        text = unicodedata.normalize("NFC", value).strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) and text[:1] in "+-.0123456789" else text
    if isinstance(value, list):
        return tuple(_comparable(v) for v in value)
    return tuple(sorted((k, _comparable(v)) for k, v in value.items()))
