"""The CSV import's catalog side: one batch of rows found among the entities, planned, and (on
commit) written in one transaction of the single writer. A preview runs the same function over
a read connection with `write` off, so what it shows is what a commit would do.

Writes go through `_Batch` as the mapper's do: new entities with `ensure`, values with `merge`
(kind `csv`, the file and row as the source, the run as `run_id`), so conflicts, attribute
sources and the run log are recorded the one way; the gap events come back to the caller for
the live report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, select, text
from sqlalchemy.engine import Connection

from importd.catalog.entities import _Batch, _Entity, _seen, safe_text
from importd.catalog.models import LIVE_PATH_WHERE
from importd.catalog.tables import chunks, entities, entity_links, files
from importd.entities import FieldRules, GapEvent, path_key
from importd.imports.csv_mapping import Change, CsvImportSpec, ParsedRow, RowPlan, entity_key, plan_row

# The run's rows in `_Batch` are logged under this pseudo root (a CSV run belongs to no root).
_NO_ROOT = 0


@dataclass(frozen=True)
class CsvRowOutcome:
    row: int
    key: str
    action: str  # create | update | unchanged | invalid | conflict | unmatched
    entity: tuple[str, str] | None  # (type, name)
    changes: tuple[Change, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()


@dataclass
class CsvBatchOutcome:
    rows: list[CsvRowOutcome] = field(default_factory=list)
    events: list[GapEvent] = field(default_factory=list)


@dataclass(frozen=True)
class _Found:
    """Where a row's key leads: an entity, a key to create one under, or why neither."""

    entity: _Entity | None = None
    new_key: str | None = None
    new_name: str | None = None
    error: str | None = None


def csv_batch(
    conn: Connection,
    rows: Sequence[ParsedRow],
    spec: CsvImportSpec,
    rules: FieldRules,
    roots: Mapping[int, bytes],
    *,
    source: str,
    now: float,
    run_id: int | None,
    write: bool,
) -> CsvBatchOutcome:
    batch = _Batch(conn, now, {_NO_ROOT: run_id})
    found = _find(batch, [r for r in rows if not r.errors], spec, roots)
    out = CsvBatchOutcome()
    etype = spec.entity_type
    to_apply: list[tuple[ParsedRow, _Found, str, str]] = []
    creating: dict[str, int] = {}  # new key -> its row
    for parsed in rows:
        where = f"{source} row {parsed.row}"
        if parsed.errors:
            out.rows.append(CsvRowOutcome(parsed.row, parsed.key, "invalid", None, (), tuple(parsed.errors)))
            if write:
                batch._log(_NO_ROOT, "invalid", None, f"{where}: {_errors_text(parsed.errors)}")
            continue
        hit = found[parsed.row]
        if hit.error is not None:
            error = ((parsed.key_column, hit.error),)
            out.rows.append(CsvRowOutcome(parsed.row, parsed.key, "invalid", None, (), error))
            if write:
                batch._log(_NO_ROOT, "invalid", None, f"{where}: {hit.error}")
            continue
        if hit.entity is None and not (spec.create and hit.new_key):
            out.rows.append(CsvRowOutcome(parsed.row, parsed.key, "unmatched", None))
            if write:
                batch._log(_NO_ROOT, "unmatched", None, f"{where}: no {etype} {parsed.key!r}")
            continue
        if hit.entity is None and hit.new_key in creating:
            # Two spellings of one new folder (absolute and relative): made once.
            error = ((parsed.key_column, f"duplicate key: row {creating[hit.new_key]} has it already"),)
            out.rows.append(CsvRowOutcome(parsed.row, parsed.key, "invalid", None, (), error))
            if write:
                batch._log(_NO_ROOT, "invalid", None, f"{where}: {error[0][1]}")
            continue
        if hit.entity is None and hit.new_key is not None:
            creating[hit.new_key] = parsed.row
        current = hit.entity.attributes if hit.entity is not None else None
        plan: RowPlan = plan_row(current, parsed, rules, etype, overwrite=spec.overwrite)
        name = hit.entity.name if hit.entity is not None else (hit.new_name or parsed.key)
        out.rows.append(
            CsvRowOutcome(parsed.row, parsed.key, plan.action, (etype, name), plan.changes, plan.errors)
        )
        if not write:
            continue
        if plan.action == "invalid":
            batch._log(_NO_ROOT, "invalid", None, f"{where}: {_errors_text(plan.errors)}")
            continue
        to_apply.append((parsed, hit, name, where))
    if not write:
        return out
    _create(
        batch, etype, [(hit.new_key, name, where) for _, hit, name, where in to_apply if hit.entity is None]
    )
    for parsed, hit, _, where in to_apply:
        entity = hit.entity or batch.entities[(etype, hit.new_key or "")]
        batch.merge(entity, parsed.values, _NO_ROOT, where, "csv", overwrite=spec.overwrite)
    batch.flush_entities()
    out.events = batch.out.events
    return out


def _create(batch: _Batch, etype: str, new: Sequence[tuple[str | None, str, str]]) -> None:
    """The batch's new entities in one statement (one INSERT per entity cost more than the rest
    of the row's work together)."""
    if not new:
        return
    values = [
        {"type": etype, "key": key, "name": safe_text(name), "attributes": "{}",
         "first_seen": batch.now, "updated": batch.now}
        for key, name, _ in new
    ]  # fmt: skip
    stmt = entities.insert().returning(entities.c.id, sort_by_parameter_order=True)
    ids = batch.conn.execute(stmt, values).scalars().all()
    for (key, name, where), eid in zip(new, ids, strict=True):
        assert key is not None
        entity = _Entity(int(eid), etype, key, safe_text(name), {})
        batch.entities[(etype, key)] = entity
        batch._log(_NO_ROOT, "created", entity, f"from {where}")
        batch.out.events.append(_seen(entity))


def _errors_text(errors: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"{column}: {message}" if column else message for column, message in errors)


def _find(
    batch: _Batch, rows: Sequence[ParsedRow], spec: CsvImportSpec, roots: Mapping[int, bytes]
) -> dict[int, _Found]:
    etype = spec.entity_type
    if spec.key_mode == "path":
        return {r.row: _find_folder(batch, r, etype, roots) for r in rows}
    keyed: dict[int, str | None] = {r.row: entity_key(spec.key_mode, r.key) for r in rows}
    batch.load_entities((etype, k) for k in keyed.values() if k)
    out: dict[int, _Found] = {}
    by_name: dict[str, list[_Entity]] = {}
    if spec.key_mode == "name":
        # Entities of the type found by path or id carry their name only: matched by it exactly.
        wanted = sorted({r.key for r in rows if (etype, keyed[r.row]) not in batch.entities})
        by_name = _by_exact_name(batch, etype, wanted)
    for r in rows:
        key = keyed[r.row]
        if key is None:
            out[r.row] = _Found(error=f"{r.key!r} is not a usable {spec.key_mode}")
            continue
        entity = batch.entities.get((etype, key))
        if entity is None and spec.key_mode == "name":
            named = by_name.get(r.key, [])
            if len(named) > 1:
                many = f"{len(named)} {etype} entities are named {r.key!r}"
                out[r.row] = _Found(error=f"{many}: import them by --key id or path")
                continue
            entity = named[0] if named else None
        out[r.row] = _Found(entity, key, r.name or r.key if spec.key_mode == "id" else r.key)
    return out


def _by_exact_name(batch: _Batch, etype: str, names: Sequence[str]) -> dict[str, list[_Entity]]:
    out: dict[str, list[_Entity]] = {}
    for part in chunks(list(names)):
        rows = batch.conn.execute(
            select(entities.c.id, entities.c.name).where(
                entities.c.type == etype,
                entities.c.name.in_(part),
                entities.c.merged_into.is_(None),
                entities.c.key.not_like("name:%"),
            )
        )
        for eid, name in rows:
            entity = batch.by_id(eid)
            if entity is not None:
                out.setdefault(name, []).append(entity)
    return out


def _find_folder(batch: _Batch, row: ParsedRow, etype: str, roots: Mapping[int, bytes]) -> _Found:
    """`--key path`: the entity keyed by the folder (a root's `match_key = "path"`), else the one
    entity of the type whose files lie under it. Relative folders are tried under every root."""
    raw = os.fsencode(row.key.replace("\\", "/")).rstrip(b"/")
    if raw.startswith(b"/"):
        places = [
            (rid, raw[len(base) + 1 :])
            for rid, base in roots.items()
            if raw.startswith(base.rstrip(b"/") + b"/")
        ]
        if not places:
            return _Found(error=f"{row.key!r} is under no root")
    else:
        rel = b"/".join(p for p in raw.split(b"/") if p not in (b"", b"."))
        if not rel or b".." in rel.split(b"/"):
            return _Found(error=f"{row.key!r} is not a folder under a root")
        places = [(rid, rel) for rid in roots]
    hits: dict[int, _Entity] = {}
    for rid, rel in places:
        key = f"root{rid}/{path_key(os.fsdecode(rel))}"
        batch.load_entities([(etype, key)])
        entity = batch.entities.get((etype, key))
        for owner in [entity] if entity is not None else _owners_of_folder(batch, etype, rid, rel):
            hits[owner.id] = owner
    if len(hits) > 1:
        names = ", ".join(sorted(e.name for e in hits.values()))
        return _Found(error=f"{row.key!r} holds files of {len(hits)} {etype} entities ({names})")
    if hits:
        return _Found(next(iter(hits.values())))
    # A new entity is keyed like a root with `match_key = "path"` keys it: in one root only.
    there = [(rid, rel) for rid, rel in places if os.path.isdir(roots[rid] + b"/" + rel)]
    if len(there) != 1:
        return _Found()
    rid, rel = there[0]
    folder = os.fsdecode(rel)
    return _Found(None, f"root{rid}/{path_key(folder)}", row.name or folder.rsplit("/", 1)[-1])


def _owners_of_folder(batch: _Batch, etype: str, root_id: int, rel: bytes) -> list[_Entity]:
    """Entities of the type with live files under `rel` (two at most: one too many)."""
    # Every path under "rel/" sorts between "rel/" and "rel0" ('0' follows '/').
    ids = batch.conn.execute(
        select(entity_links.c.entity_id)
        .join(files, files.c.id == entity_links.c.file_id)
        .join(entities, entities.c.id == entity_links.c.entity_id)
        .where(
            and_(
                files.c.root_id == root_id,
                files.c.relpath > rel + b"/",
                files.c.relpath < rel + b"0",
                text(LIVE_PATH_WHERE),
                entities.c.type == etype,
                entities.c.merged_into.is_(None),
            )
        )
        .distinct()
        .limit(2)
    ).all()
    return [e for (eid,) in ids if (e := batch.by_id(int(eid))) is not None]


__all__ = ["CsvBatchOutcome", "CsvRowOutcome", "csv_batch"]
