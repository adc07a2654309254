"""What an attribute's value may be: the `[fields.<type>.<attribute>]` config tables.

    [fields.character.age]
    type = "int"            int | float | date | bool | enum | regex | text (the default)
    min = 0                 int, float, date: bounds, both included
    max = 150
    required = true         a row must leave the entity with a value

    [fields.character.born]
    type = "date"           ISO (2001-12-31); with dayfirst = true also 31/12/2001 (or 31.12.2001)
    dayfirst = true

    [fields.character.eyes]
    type = "enum"
    values = ["blue", "green", "brown"]   matched case and accents aside, stored as spelled here

    [fields.character.code]
    type = "regex"
    pattern = "C-[0-9]{4}"  the whole text must match

`check_field` turns one cell's text into the value stored (an int as a JSON number, a date as its ISO
text) or a `FieldFailure` saying why not; nothing raises. Attribute names are folded like every
attribute name (`keys.fold`). Imports (the CSV import) check their values with these rules.
"""

from __future__ import annotations

import datetime
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from importd.entities.keys import fold
from importd.entities.metadata import JsonValue

__all__ = [
    "FIELD_TYPES",
    "FieldError",
    "FieldFailure",
    "FieldRules",
    "FieldSpec",
    "check_field",
    "parse_fields",
]

FIELD_TYPES: Final = ("text", "int", "float", "date", "bool", "enum", "regex")
_KEYS: Final = frozenset({"type", "min", "max", "values", "pattern", "dayfirst", "required"})
_BOUNDED: Final = frozenset({"int", "float", "date"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_DAY_FIRST = re.compile(r"([0-9]{1,2})[/.\-]([0-9]{1,2})[/.\-]([0-9]{4})")
_TRUE: Final = frozenset({"true", "yes", "y", "1", "oui", "vrai"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "non", "faux"})


class FieldError(ValueError):
    """A `[fields]` table that cannot be used; `key` names it for the config error."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class FieldFailure:
    message: str


@dataclass(frozen=True)
class FieldSpec:
    type: str = "text"
    minimum: int | float | str | None = None  # a date's bound is its ISO text
    maximum: int | float | str | None = None
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    dayfirst: bool = False
    required: bool = False


@dataclass(frozen=True)
class FieldRules:
    """{entity type: {folded attribute: spec}}."""

    by_type: Mapping[str, Mapping[str, FieldSpec]] = field(default_factory=dict)

    def spec(self, entity_type: str, attribute: str) -> FieldSpec | None:
        return self.by_type.get(entity_type, {}).get(fold(attribute))

    def required(self, entity_type: str) -> tuple[str, ...]:
        return tuple(name for name, spec in self.by_type.get(entity_type, {}).items() if spec.required)


def parse_fields(table: Mapping[str, Any] | None) -> FieldRules:
    """The `[fields]` config table; `FieldError` names the key (`fields.character.age.min`)."""
    if table is None:
        return FieldRules()
    if not isinstance(table, Mapping):
        raise FieldError("fields", "must be a table of [fields.<entity type>.<attribute>] tables")
    by_type: dict[str, dict[str, FieldSpec]] = {}
    for entity_type, attributes in table.items():
        if not isinstance(attributes, Mapping):
            raise FieldError(f"fields.{entity_type}", "must be a table of [fields.<type>.<attribute>] tables")
        specs: dict[str, FieldSpec] = {}
        for name, raw in attributes.items():
            where = f"fields.{entity_type}.{name}"
            folded = fold(name)
            if not folded:
                raise FieldError(where, "an attribute needs a name")
            if folded in specs:
                raise FieldError(where, f"{folded!r} is given twice (names ignore case and accents)")
            specs[folded] = _parse_spec(raw, where)
        by_type[entity_type] = specs
    return FieldRules(by_type)


def _parse_spec(raw: Any, where: str) -> FieldSpec:
    if not isinstance(raw, Mapping):
        raise FieldError(where, "must be a table (type, min, max, values, pattern, dayfirst, required)")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise FieldError(f"{where}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_KEYS))})")
    kind = raw.get("type", "text")
    if kind not in FIELD_TYPES:
        raise FieldError(f"{where}.type", f"must be one of {', '.join(FIELD_TYPES)}, not {kind!r}")
    for flag in ("required", "dayfirst"):
        if not isinstance(raw.get(flag, False), bool):
            raise FieldError(f"{where}.{flag}", "must be true or false")
    if "dayfirst" in raw and kind != "date":
        raise FieldError(f"{where}.dayfirst", 'only for type = "date"')
    bounds = [_bound(raw, key, kind, where) for key in ("min", "max")]
    if _inverted(bounds[0], bounds[1]):
        raise FieldError(f"{where}.min", f"is above max ({bounds[0]!r} > {bounds[1]!r})")
    values: tuple[str, ...] = ()
    if kind == "enum":
        listed = raw.get("values")
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(v, str) and v.strip() for v in listed)
        ):
            raise FieldError(f"{where}.values", "an enum needs values = [...], non-empty strings")
        folded = [fold(v) for v in listed]
        twice = next((v for v in folded if folded.count(v) > 1), None)
        if twice is not None:
            raise FieldError(f"{where}.values", f"{twice!r} is listed twice")
        values = tuple(unicodedata.normalize("NFC", v).strip() for v in listed)
    elif "values" in raw:
        raise FieldError(f"{where}.values", 'only for type = "enum"')
    pattern = None
    if kind == "regex":
        text = raw.get("pattern")
        if not isinstance(text, str) or not text:
            raise FieldError(f"{where}.pattern", 'a regex field needs pattern = "..."')
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise FieldError(f"{where}.pattern", f"not a regular expression: {exc}") from None
    elif "pattern" in raw:
        raise FieldError(f"{where}.pattern", 'only for type = "regex"')
    return FieldSpec(
        type=kind,
        minimum=bounds[0],
        maximum=bounds[1],
        values=values,
        pattern=pattern,
        dayfirst=raw.get("dayfirst", False),
        required=raw.get("required", False),
    )


def _inverted(low: int | float | str | None, high: int | float | str | None) -> bool:
    if isinstance(low, str) and isinstance(high, str):
        return low > high
    if isinstance(low, int | float) and isinstance(high, int | float):
        return low > high
    return False


def _bound(raw: Mapping[str, Any], key: str, kind: str, where: str) -> int | float | str | None:
    if key not in raw:
        return None
    value = raw[key]
    if kind not in _BOUNDED:
        raise FieldError(f"{where}.{key}", 'only for type = "int", "float" or "date"')
    if kind == "date":
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date | str):
            raise FieldError(f"{where}.{key}", "must be a date (1990-01-01)")
        parsed = value if isinstance(value, datetime.date) else _iso_date(value)
        if parsed is None:
            raise FieldError(f"{where}.{key}", f"must be a date (1990-01-01), not {value!r}")
        return parsed.isoformat()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"{where}.{key}", f"must be a number, not {value!r}")
    if kind == "int" and not isinstance(value, int):
        raise FieldError(f"{where}.{key}", f"must be a whole number, not {value!r}")
    if value != value:  # nan: every comparison with it is false, so it would bound nothing
        raise FieldError(f"{where}.{key}", "must be a number, not nan")
    return value


def check_field(spec: FieldSpec | None, text: str) -> JsonValue | FieldFailure:
    """The value `text` stands for under `spec` (None: plain text). `text` is not blank: a blank
    cell is no value, and the caller leaves it out before asking."""
    cell = unicodedata.normalize("NFC", text).strip()
    if spec is None or spec.type == "text":
        return cell
    if spec.type == "int":
        if not _INT.fullmatch(cell):
            return FieldFailure(f"{cell!r} is not a whole number")
        return _bounded(spec, int(cell), cell)
    if spec.type == "float":
        spelled = cell.replace(",", ".") if "," in cell and "." not in cell else cell
        if not _FLOAT.fullmatch(spelled):
            return FieldFailure(f"{cell!r} is not a number")
        number = float(spelled)
        if not math.isfinite(number):
            return FieldFailure(f"{cell!r} is not a finite number")
        return _bounded(spec, number, cell)
    if spec.type == "date":
        return _date(spec, cell)
    if spec.type == "bool":
        word = cell.casefold()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        return FieldFailure(f"{cell!r} is not true or false (true/false, yes/no, 1/0)")
    if spec.type == "enum":
        wanted = fold(cell)
        for value in spec.values:
            if fold(value) == wanted:
                return value
        return FieldFailure(f"{cell!r} is not one of {', '.join(spec.values)}")
    assert spec.type == "regex" and spec.pattern is not None
    if spec.pattern.fullmatch(cell) is None:
        return FieldFailure(f"{cell!r} does not match {spec.pattern.pattern!r}")
    return cell


def _bounded(spec: FieldSpec, value: int | float, cell: str) -> JsonValue | FieldFailure:
    low, high = spec.minimum, spec.maximum
    if isinstance(low, int | float) and value < low:
        return FieldFailure(f"{cell} is below the minimum {low}")
    if isinstance(high, int | float) and value > high:
        return FieldFailure(f"{cell} is above the maximum {high}")
    return value


def _date(spec: FieldSpec, cell: str) -> JsonValue | FieldFailure:
    parsed = _iso_date(cell)
    if parsed is None and spec.dayfirst:
        m = _DAY_FIRST.fullmatch(cell)
        parsed = _real_date(int(m.group(3)), int(m.group(2)), int(m.group(1))) if m else None
    if parsed is None:
        spelled = (
            "YYYY-MM-DD or DD/MM/YYYY" if spec.dayfirst else "YYYY-MM-DD (dayfirst = true for DD/MM/YYYY)"
        )
        return FieldFailure(f"{cell!r} is not a date ({spelled})")
    iso = parsed.isoformat()
    if isinstance(spec.minimum, str) and iso < spec.minimum:
        return FieldFailure(f"{iso} is before the minimum {spec.minimum}")
    if isinstance(spec.maximum, str) and iso > spec.maximum:
        return FieldFailure(f"{iso} is after the maximum {spec.maximum}")
    return iso


def _iso_date(text: str) -> datetime.date | None:
    m = _ISO_DATE.fullmatch(text)
    return _real_date(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _real_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None
