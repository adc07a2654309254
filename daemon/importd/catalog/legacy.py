"""Statements of a legacy catalog's migration: what the catalog knows of the old rows' files,
linking an old row's values and tags to its files (and their entities), the background backlog
(`legacy_backlog`, `backlog_control`) and per-file values (`file_attributes`).

Where an old row's values go: every value (its name, its [files.attributes], a hash of another
algorithm) is kept per file in `file_attributes` (shown by `importctl info`); the mapped
attributes (not the name: an entity has its own) are also merged into the entity the file maps
to, if any, as the mapper merges a metadata file (an empty attribute is filled, a differing one
is an open conflict, never overwritten), with `attribute_sources` kind `legacy`. Tags go on the
file (`file_tags`, through `catalog/tags.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection

from importd.catalog.engine import dialect_insert
from importd.catalog.entities import _Batch, dumps
from importd.catalog.models import LIVE_PATH_WHERE, LIVE_STATUSES
from importd.catalog.tables import (
    backlog_control,
    chunks,
    entity_links,
    file_attributes,
    file_tags,
    files,
    legacy_backlog,
    roots,
    run_log,
)
from importd.catalog.tags import ensure_tags
from importd.entities import GapEvent
from importd.imports.legacy import Known

MIGRATION = "migration"  # backlog_control's row for the legacy backlog
BACKLOG_STATES = ("pending", "done", "missing", "failed")


def known_by_hash(conn: Connection, digests: Sequence[str]) -> dict[str, list[Known]]:
    out: dict[str, list[Known]] = {}
    for part in chunks(sorted(set(digests))):
        rows = conn.execute(
            select(files.c.id, files.c.blake3)
            .where(files.c.blake3.in_(part), files.c.status.in_(LIVE_STATUSES))
            .order_by(files.c.id)
        )
        for fid, digest in rows:
            out.setdefault(digest, []).append(Known(fid, digest))
    return out


# Spelled with the partial index's own condition, so SQLite looks each path up in it.
_AT_PATHS = (
    f"SELECT id, relpath, blake3 FROM files WHERE root_id = :root AND relpath IN ({{}}) AND {LIVE_PATH_WHERE}"
)


def known_at_paths(conn: Connection, places: Iterable[tuple[int, bytes]]) -> dict[tuple[int, bytes], Known]:
    by_root: dict[int, list[bytes]] = {}
    for root_id, relpath in places:
        by_root.setdefault(root_id, []).append(relpath)
    out: dict[tuple[int, bytes], Known] = {}
    for root_id, paths in by_root.items():
        for part in chunks(sorted(set(paths))):
            names = ", ".join(f":p{i}" for i in range(len(part)))
            params: dict[str, Any] = {f"p{i}": p for i, p in enumerate(part)} | {"root": root_id}
            for fid, rel, digest in conn.execute(text(_AT_PATHS.format(names)), params):
                out[(root_id, bytes(rel))] = Known(fid, digest)
    return out


@dataclass(frozen=True, slots=True)
class Link:
    """One old row's record (see `imports.legacy.record_of`) going to these catalog files."""

    file_ids: tuple[int, ...]
    legacy_id: str
    record: Mapping[str, Any]


def link(conn: Connection, links: Sequence[Link], source: str, run_id: int, now: float) -> list[GapEvent]:
    """Write the rows' values and tags to their files, and merge the mapped attributes into the
    files' entities. Returns the gap report's events (the attributes that were set)."""
    wanted: dict[str, str | None] = {}
    for item in links:
        for name, color in item.record.get("tags", []):
            wanted.setdefault(name, color)
    tag_ids = ensure_tags(conn, wanted, now) if wanted else {}
    file_ids = sorted({fid for item in links for fid in item.file_ids})
    entity_of: dict[int, int] = {}
    for part in chunks(file_ids):
        rows_of = conn.execute(
            select(entity_links.c.file_id, entity_links.c.entity_id).where(
                entity_links.c.file_id.in_(part), entity_links.c.entity_id.is_not(None)
            )
        )
        entity_of.update((int(fid), int(eid)) for fid, eid in rows_of)
    batch = _Batch(conn, now, {0: run_id})
    rows: list[dict[str, Any]] = []
    tagged: list[dict[str, Any]] = []
    for item in links:
        where = f"{source} row {item.legacy_id}"
        values: Mapping[str, Any] = item.record.get("values", {})
        for fid in item.file_ids:
            rows += [
                {"file_id": fid, "name": name, "value": dumps(value), "kind": "legacy", "source": where,
                 "run_id": run_id, "at": now}
                for name, value in values.items()
            ]  # fmt: skip
            tagged += [
                {"file_id": fid, "tag_id": tag_ids[name].id, "source": source, "at": now}
                for name, _ in item.record.get("tags", [])
                if name in tag_ids
            ]
            entity_id = entity_of.get(fid)
            incoming = item.record.get("entity_values", {})
            if entity_id is not None and incoming:
                entity = batch.by_id(entity_id)
                if entity is not None:
                    batch.merge(entity, incoming, 0, where, "legacy")
    if rows:
        stmt = dialect_insert(conn, file_attributes)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["file_id", "name"],
                set_={c: stmt.excluded[c] for c in ("value", "kind", "source", "run_id", "at")},
            ),
            rows,
        )
    if tagged:  # tag_file's statement, for many files at once
        stmt = dialect_insert(conn, file_tags).on_conflict_do_nothing(index_elements=["file_id", "tag_id"])
        conn.execute(stmt, tagged)
    batch.flush_entities()
    return batch.out.events


def log_lines(conn: Connection, run_id: int, lines: Sequence[tuple[str, str]], now: float) -> None:
    """The run's log: (action, detail) per old row that was not simply linked."""
    if lines:
        conn.execute(
            run_log.insert(),
            [{"run_id": run_id, "action": a, "detail": d[:2000], "at": now} for a, d in lines],
        )


def add_backlog(
    conn: Connection,
    items: Sequence[tuple[int, bytes, str, Mapping[str, Any]]],
    run_id: int,
    now: float,
    state: str = "pending",
) -> None:
    """(root_id, relpath, legacy id, record) rows, pending (or `missing`: a row whose file was
    gone at the commit is kept, never dropped)."""
    if items:
        conn.execute(
            legacy_backlog.insert(),
            [
                {"run_id": run_id, "root_id": rid, "relpath": rel, "legacy_id": lid,
                 "record": json.dumps(rec, ensure_ascii=True), "state": state, "added": now,
                 "settled": None if state == "pending" else now}
                for rid, rel, lid, rec in items
            ],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    run_id: int
    root_id: int
    relpath: bytes
    legacy_id: str
    record: dict[str, Any]


def _host_roots(host: str) -> Any:
    return select(roots.c.id).where(roots.c.host == host).scalar_subquery()


def pending(conn: Connection, host: str, limit: int, after: int = 0) -> list[Pending]:
    """This host's backlog rows (a legacy catalog is migrated onto one server's roots)."""
    rows = conn.execute(
        select(
            legacy_backlog.c.id,
            legacy_backlog.c.run_id,
            legacy_backlog.c.root_id,
            legacy_backlog.c.relpath,
            legacy_backlog.c.legacy_id,
            legacy_backlog.c.record,
        )
        .where(
            legacy_backlog.c.state == "pending",
            legacy_backlog.c.id > after,
            legacy_backlog.c.root_id.in_(_host_roots(host)),
        )
        .order_by(legacy_backlog.c.id)
        .limit(limit)
    )
    return [Pending(i, r, root, bytes(rel), lid, json.loads(rec)) for i, r, root, rel, lid, rec in rows]


def settle(conn: Connection, outcomes: Sequence[tuple[int, str, str | None]], now: float) -> None:
    """(backlog id, state, error) for rows that left `pending`."""
    for bid, state, error in outcomes:
        conn.execute(
            update(legacy_backlog)
            .where(legacy_backlog.c.id == bid)
            .values(state=state, error=None if error is None else error[:2000], settled=now)
        )


def backlog_counts(conn: Connection, host: str) -> dict[str, int]:
    counts = dict.fromkeys(BACKLOG_STATES, 0)
    for state, n in conn.execute(
        select(legacy_backlog.c.state, func.count())
        .where(legacy_backlog.c.root_id.in_(_host_roots(host)))
        .group_by(legacy_backlog.c.state)
    ):
        counts[state] = int(n)
    return counts


def is_paused(conn: Connection, name: str = MIGRATION) -> bool:
    row = conn.execute(select(backlog_control.c.paused).where(backlog_control.c.name == name)).first()
    return bool(row and row[0])


def set_paused(conn: Connection, paused: bool, now: float, name: str = MIGRATION) -> None:
    stmt = dialect_insert(conn, backlog_control).values(name=name, paused=paused, updated=now)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"paused": paused, "updated": now}))


def attributes_at(conn: Connection, root_name: str, relpath: bytes) -> dict[str, tuple[Any, str, str, float]]:
    """The own values of the file at this path (its newest row): name -> (value, kind, source, at)."""
    file_id = conn.execute(
        select(files.c.id)
        .join(roots, roots.c.id == files.c.root_id)
        .where(roots.c.name == root_name, files.c.relpath == relpath)
        .order_by(files.c.id.desc())
        .limit(1)
    ).scalar()
    if file_id is None:
        return {}
    rows = conn.execute(
        select(
            file_attributes.c.name,
            file_attributes.c.value,
            file_attributes.c.kind,
            file_attributes.c.source,
            file_attributes.c.at,
        )
        .where(file_attributes.c.file_id == int(file_id))
        .order_by(file_attributes.c.name)
    )
    return {name: (json.loads(value), kind, source, at) for name, value, kind, source, at in rows}
