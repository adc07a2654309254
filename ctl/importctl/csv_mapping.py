"""`import-csv`'s mapping: `--mapping FILE` (TOML, for a mapping used again and again) and the
`--map COLUMN=FIELD` options, merged into what the daemon is sent (standard library only).

    type = "character"     # the entity type (--type wins)
    key = "name"           # name | path | id (--key wins)
    [columns]              # column, as the header spells it = field
    "Nom" = "name"
    "Âge" = "age"

A `--map` for a column the file maps too replaces that entry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from importctl.protocol import IMPORT_KEY_MODES

__all__ = ["CsvMapping", "MappingFileError", "load_mapping", "parse_map_option"]

_KEYS = frozenset({"type", "key", "columns"})


class MappingFileError(ValueError):
    pass


@dataclass
class CsvMapping:
    entity_type: str | None = None
    key: str | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)

    def with_option(self, column: str, target: str) -> None:
        self.columns = [(c, f) for c, f in self.columns if c != column] + [(column, target)]


def load_mapping(path: Path) -> CsvMapping:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise MappingFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingFileError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise MappingFileError(f"{path}: {unknown[0]}: unknown key (allowed: columns, key, type)")
    out = CsvMapping()
    for name in ("type", "key"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise MappingFileError(f"{path}: {name}: must be a non-empty string")
    out.entity_type = data.get("type")
    out.key = data.get("key")
    if out.key is not None and out.key not in IMPORT_KEY_MODES:
        raise MappingFileError(f"{path}: key: must be one of {', '.join(IMPORT_KEY_MODES)}, not {out.key!r}")
    columns = data.get("columns", {})
    if not isinstance(columns, dict):
        raise MappingFileError(f'{path}: columns: must be a table of "COLUMN" = "FIELD"')
    for column, target in columns.items():
        if not isinstance(target, str) or not target.strip():
            raise MappingFileError(f"{path}: columns.{column}: the field must be a non-empty string")
        out.columns.append((column, target))
    return out


def parse_map_option(text: str) -> tuple[str, str]:
    """`COLUMN=FIELD` (a column name may hold `=`: the last one separates)."""
    column, sep, target = text.rpartition("=")
    if not sep or not column.strip() or not target.strip():
        raise MappingFileError(f"--map {text!r}: write COLUMN=FIELD")
    return column, target.strip()
