"""A legacy catalog (SQLite) read through its mapping: the pure stage of `migrate-legacy`.

The mapping (TOML) names the old tables and columns; it is checked against the old database's
schema before anything is read, and each failure names the table or column and the mapping key.
The old database is opened read-only (`mode=ro`: never `immutable=1`, which would let a process
still writing it hand us torn pages) and its rows are streamed: one query whose cursor is read a
batch at a time, files joined with their tags in SQL (SQLite indexes the link table on the fly),
so memory does not grow with the size of the old catalog.

`plan` decides, for one row, what the migration will do with it, from what the caller found on
disk and in the catalog: link, backlog, stale, missing, outside, invalid.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BLAKE3_HEX = re.compile(r"[0-9a-f]{64}")
# Values an old catalog may hold in a cell, as JSON-able values.
Value = str | int | float | None
ACTIONS = ("link", "backlog", "stale", "missing", "outside", "invalid")


@dataclass(frozen=True, slots=True)
class TagsMapping:
    table: str
    id: str
    name: str
    color: str | None
    links_table: str
    links_file: str
    links_tag: str


@dataclass(frozen=True, slots=True)
class LegacyMapping:
    table: str
    id: str
    path: str
    root: str | None = None  # an importd root's name: relative paths are under it
    hash: str | None = None
    hash_algorithm: str = "blake3"
    name: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)  # attribute -> column
    tags: TagsMapping | None = None


@dataclass(frozen=True, slots=True)
class MappingError:
    """Why a mapping cannot be used: one line, with what would fix it."""

    message: str
    hint: str
    code: str = "invalid"  # the API's error code: invalid | not_found | busy


@dataclass(frozen=True, slots=True)
class LegacyRow:
    legacy_id: str
    path: str | None
    hash: str | None
    name: Value
    attributes: Mapping[str, Value]
    tags: tuple[tuple[str, str | None], ...]  # (name, colour)


def _text(
    section: Mapping[str, Any], key: str, where: str, required: bool = True
) -> str | MappingError | None:
    value = section.get(key)
    if value is None:
        if required:
            return MappingError(f"the mapping has no {where}.{key}", f'name its column: {key} = "COLUMN"')
        return None
    if not isinstance(value, str) or not value:
        return MappingError(f"{where}.{key} must be a column name (a string)", f'{key} = "COLUMN"')
    return value


def parse_mapping(text: str) -> LegacyMapping | MappingError:
    """The mapping TOML -> LegacyMapping, or what is wrong with it."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return MappingError(f"the mapping is not valid TOML: {exc}", "check its syntax")
    files = doc.get("files")
    if not isinstance(files, dict):
        return MappingError("the mapping has no [files] table", "add [files] with table, id and path")
    known = {"table", "id", "path", "root", "hash", "hash_algorithm", "name", "attributes"}
    unknown = sorted(set(files) - known)
    if unknown:
        return MappingError(
            f"[files] has unknown keys: {', '.join(unknown)}", f"known: {', '.join(sorted(known))}"
        )
    got: dict[str, str | None] = {}
    for key, required in (
        ("table", True),
        ("id", True),
        ("path", True),
        ("root", False),
        ("hash", False),
        ("name", False),
    ):
        value = _text(files, key, "files", required)
        if isinstance(value, MappingError):
            return value
        got[key] = value
    algorithm = files.get("hash_algorithm", "blake3")
    if not isinstance(algorithm, str) or not algorithm:
        return MappingError(
            "files.hash_algorithm must be a name (blake3, md5, sha1…)", 'hash_algorithm = "blake3"'
        )
    attributes = files.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in attributes.items()
    ):
        return MappingError(
            "[files.attributes] must map attribute names to column names", 'rating = "rating"'
        )
    tags = _parse_tags(doc.get("tags"))
    if isinstance(tags, MappingError):
        return tags
    return LegacyMapping(
        table=str(got["table"]),
        id=str(got["id"]),
        path=str(got["path"]),
        root=got["root"],
        hash=got["hash"],
        hash_algorithm=algorithm.lower(),
        name=got["name"],
        attributes=dict(attributes),
        tags=tags,
    )


def _parse_tags(section: object) -> TagsMapping | MappingError | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        return MappingError("[tags] must be a table", "see the README's mapping example")
    links = section.get("links")
    if not isinstance(links, dict):
        return MappingError("[tags] needs a [tags.links] table (table, file, tag)", "add [tags.links]")
    out: dict[str, str | None] = {}
    for where, sect, key, required in (
        ("tags", section, "table", True),
        ("tags", section, "id", True),
        ("tags", section, "name", True),
        ("tags", section, "color", False),
        ("tags.links", links, "table", True),
        ("tags.links", links, "file", True),
        ("tags.links", links, "tag", True),
    ):
        value = _text(sect, key, where, required)
        if isinstance(value, MappingError):
            return value
        out[f"{where}.{key}"] = value
    return TagsMapping(
        table=str(out["tags.table"]),
        id=str(out["tags.id"]),
        name=str(out["tags.name"]),
        color=out["tags.color"],
        links_table=str(out["tags.links.table"]),
        links_file=str(out["tags.links.file"]),
        links_tag=str(out["tags.links.tag"]),
    )


def open_read_only(path: str) -> sqlite3.Connection | MappingError:
    """The old catalog, read-only: a write through this connection fails, and nothing (no WAL,
    no journal) is created beside it."""
    if not os.path.isfile(path):
        return MappingError(
            f"no legacy catalog at {path}", "give the path of the old SQLite file", "not_found"
        )
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        return MappingError(f"{path} cannot be read as SQLite: {exc}", "is it a SQLite database?")
    return conn


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: sqlite3.Connection, table: str) -> set[str] | None:
    rows = conn.execute(f"PRAGMA table_info({_q(table)})").fetchall()
    return {row[1] for row in rows} if rows else None


def check_schema(conn: sqlite3.Connection, mapping: LegacyMapping) -> MappingError | None:
    """Every table and column the mapping names exists in the old catalog."""
    wanted: list[tuple[str, str, list[tuple[str, str]]]] = [
        (
            "files",
            mapping.table,
            [("id", mapping.id), ("path", mapping.path)]
            + ([("hash", mapping.hash)] if mapping.hash else [])
            + ([("name", mapping.name)] if mapping.name else [])
            + [(f"attributes.{k}", v) for k, v in mapping.attributes.items()],
        )
    ]
    if mapping.tags is not None:
        t = mapping.tags
        wanted.append(
            ("tags", t.table, [("id", t.id), ("name", t.name)] + ([("color", t.color)] if t.color else []))
        )
        wanted.append(("tags.links", t.links_table, [("file", t.links_file), ("tag", t.links_tag)]))
    tables = sorted(
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
    )
    for where, table, columns in wanted:
        have = _columns(conn, table)
        if have is None:
            return MappingError(
                f"{where}.table: no table {table!r} in the legacy catalog",
                f"its tables: {', '.join(tables) or 'none'}",
            )
        for key, column in columns:
            if column not in have:
                return MappingError(
                    f"{where}.{key}: no column {column!r} in table {table!r}",
                    f"its columns: {', '.join(sorted(have))}",
                )
    return None


def _value(cell: object) -> Value:
    if isinstance(cell, bytes):
        return cell.decode("utf-8", "replace")
    if cell is None or isinstance(cell, str | int | float):
        return cell
    return str(cell)


def read_tags(conn: sqlite3.Connection, tags: TagsMapping) -> dict[object, tuple[str, str | None]]:
    """The old catalog's tags by id (a tag table is small: read whole)."""
    color = _q(tags.color) if tags.color else "NULL"
    sql = f"SELECT {_q(tags.id)}, {_q(tags.name)}, {color} FROM {_q(tags.table)}"
    out: dict[object, tuple[str, str | None]] = {}
    for tid, name, col in conn.execute(sql):
        if name is None or not str(name).strip():
            continue
        out[tid] = (str(name).strip(), str(col).strip() if col not in (None, "") else None)
    return out


def read_rows(
    conn: sqlite3.Connection, mapping: LegacyMapping, batch: int = 1000
) -> Iterator[list[LegacyRow]]:
    """The old catalog's file rows, with their tags, a batch at a time (streamed)."""
    cols = [mapping.id, mapping.path, mapping.hash, mapping.name, *mapping.attributes.values()]
    select = ", ".join("NULL" if c is None else "f." + _q(c) for c in cols)
    tag_names: dict[object, tuple[str, str | None]] = {}
    t = mapping.tags
    if t is not None:
        tag_names = read_tags(conn, t)
        sql = (
            f"SELECT {select}, l.{_q(t.links_tag)} FROM {_q(mapping.table)} AS f"
            f" LEFT JOIN {_q(t.links_table)} AS l ON l.{_q(t.links_file)} = f.{_q(mapping.id)}"
            f" ORDER BY f.{_q(mapping.id)}"
        )
    else:
        sql = f"SELECT {select}, NULL FROM {_q(mapping.table)} AS f ORDER BY f.{_q(mapping.id)}"
    names = list(mapping.attributes)
    cursor = conn.execute(sql)
    out: list[LegacyRow] = []
    current: list[Any] | None = None
    tags: list[tuple[str, str | None]] = []

    def finish(cells: list[Any]) -> LegacyRow:
        ident, path, digest, name, *rest = cells
        seen: dict[str, tuple[str, str | None]] = {}
        for tag in tags:
            seen.setdefault(tag[0].casefold(), tag)
        return LegacyRow(
            legacy_id=str(_value(ident)),
            path=None if path is None else str(_value(path)),
            hash=None if digest in (None, "") else str(_value(digest)).strip(),
            name=_value(name),
            attributes={n: _value(v) for n, v in zip(names, rest, strict=True) if v is not None},
            tags=tuple(seen.values()),
        )

    while chunk := cursor.fetchmany(batch):
        for record in chunk:
            cells, tag_id = list(record[:-1]), record[-1]
            if current is None or cells[0] != current[0]:
                if current is not None:
                    out.append(finish(current))
                    if len(out) >= batch:
                        yield out
                        out = []
                current, tags = cells, []
            if tag_id is not None and tag_id in tag_names:
                tags.append(tag_names[tag_id])
    if current is not None:
        out.append(finish(current))
    if out:
        yield out


# ----- what to do with a row -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    """A row's file: which root, where under it, and the absolute path."""

    root_id: int
    relpath: bytes
    path: bytes


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str


@dataclass(frozen=True, slots=True)
class Outside:
    path: bytes


def locate_row(
    row: LegacyRow, mapping: LegacyMapping, roots: Sequence[tuple[int, str, bytes]]
) -> Located | Invalid | Outside:
    """Where the row's path is: absolute, or relative to the mapping's `root` (an importd root's
    name). `roots` are (root_id, name, absolute path). Matched as spelled, normalised: a path
    outside every root is not imported."""
    if row.path is None or not row.path.strip():
        return Invalid("no path")
    raw = os.fsencode(row.path)
    if b"\x00" in raw:
        return Invalid("the path holds a NUL byte")
    if not os.path.isabs(raw):
        base = next((p for _, n, p in roots if n == mapping.root), None) if mapping.root else None
        if base is None:
            return Invalid("a relative path, and the mapping names no root (files.root)")
        raw = os.path.join(base, raw)
    raw = os.path.normpath(raw)
    for root_id, _, base in roots:
        if raw.startswith(base + b"/"):
            return Located(root_id, raw[len(base) + 1 :], raw)
    return Outside(raw)


def trusted_hash(row: LegacyRow, mapping: LegacyMapping) -> str | Invalid | None:
    """The row's BLAKE3 when the mapping says the column holds BLAKE3 (lower-cased); another
    algorithm's value is not trusted (kept as an attribute); a malformed BLAKE3 is invalid."""
    if row.hash is None or mapping.hash_algorithm != "blake3":
        return None
    digest = row.hash.lower()
    if not BLAKE3_HEX.fullmatch(digest):
        return Invalid(f"hash {row.hash[:80]!r} is not a BLAKE3 digest (64 hex digits)")
    return digest


@dataclass(frozen=True, slots=True)
class Known:
    """A catalogued live file: its row id and its BLAKE3 (None while in error)."""

    file_id: int
    blake3: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # one of ACTIONS
    file_ids: tuple[int, ...] = ()  # link and stale: the catalog rows the row's data goes to
    detail: str | None = None


def decide(digest: str | None, by_hash: Sequence[Known], at_path: Known | None, on_disk: bool) -> Decision:
    """What one located row becomes. `by_hash`: live rows with the row's BLAKE3; `at_path`:
    the live row at its path; `on_disk`: a regular file is at its path now."""
    if digest is not None and by_hash:
        return Decision("link", tuple(k.file_id for k in by_hash))
    if at_path is not None and at_path.blake3 is not None:
        if digest is not None and at_path.blake3 != digest:
            return Decision(
                "stale", (at_path.file_id,), f"the old catalog says {digest}, the file is {at_path.blake3}"
            )
        return Decision("link", (at_path.file_id,))
    if on_disk:
        return Decision("backlog")
    return Decision("missing", detail="no file at this path")


def record_of(row: LegacyRow, mapping: LegacyMapping) -> dict[str, Any]:
    """What the migration keeps of a row (JSON-able): the per-file values, its tags, its hash."""
    values: dict[str, Any] = {}
    if row.name is not None:
        values["name"] = row.name
    values.update(row.attributes)
    if row.hash is not None and mapping.hash_algorithm != "blake3":
        values[mapping.hash_algorithm] = row.hash  # kept, not trusted
    return {
        "values": values,
        "entity_values": dict(row.attributes),
        "tags": [list(t) for t in row.tags],
        "blake3": row.hash.lower() if row.hash is not None and mapping.hash_algorithm == "blake3" else None,
    }


__all__ = [
    "ACTIONS",
    "Decision",
    "Invalid",
    "Known",
    "LegacyMapping",
    "LegacyRow",
    "Located",
    "MappingError",
    "Outside",
    "TagsMapping",
    "check_schema",
    "decide",
    "locate_row",
    "open_read_only",
    "parse_mapping",
    "read_rows",
    "read_tags",
    "record_of",
    "trusted_hash",
]
