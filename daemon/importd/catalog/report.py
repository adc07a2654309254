"""The reads behind the HTML report (`api/report.py`) that no other command makes: the file and
media facts of the duplicates it draws, each root's last reconcile, and which entities a root
holds. Every read is bounded by what the page shows (at most a few thousand paths)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from importd.catalog.models import STATUS_PRESENT
from importd.catalog.tables import chunks, entities, entity_links, extractions, files, runs

# Only these extractors hold what a duplicate's card shows (resolution, duration, codec).
FACT_EXTRACTORS = ("image", "av")


def file_facts(
    conn: Connection, places: Sequence[tuple[int, bytes]]
) -> dict[tuple[int, bytes], tuple[int, int]]:
    """{(root_id, relpath): (size, mtime_ns)} of the present rows at these places."""
    by_root: dict[int, list[bytes]] = {}
    for rid, rel in places:
        by_root.setdefault(rid, []).append(rel)
    out: dict[tuple[int, bytes], tuple[int, int]] = {}
    for rid, rels in by_root.items():
        for part in chunks(sorted(set(rels))):
            rows = conn.execute(
                select(files.c.relpath, files.c.size, files.c.mtime_ns).where(
                    files.c.root_id == rid, files.c.status == STATUS_PRESENT, files.c.relpath.in_(part)
                )
            )
            for rel, size, mtime_ns in rows:
                out[(rid, bytes(rel))] = (int(size), int(mtime_ns))
    return out


def media_facts(conn: Connection, digests: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{blake3: {extractor: facts}} of the successful image and av extractions of these contents."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for part in chunks(sorted(set(digests))):
        rows = conn.execute(
            select(extractions.c.blake3, extractions.c.extractor, extractions.c.facts).where(
                extractions.c.blake3.in_(part),
                extractions.c.extractor.in_(FACT_EXTRACTORS),
                extractions.c.status == "ok",
            )
        )
        for digest, extractor, facts in rows:
            if facts:
                out.setdefault(digest, {})[extractor] = json.loads(facts)
    return out


def last_reconciles(conn: Connection) -> dict[int, tuple[str, float, float | None]]:
    """{root_id: (status, started, finished)} of each root's latest reconcile run."""
    latest = (
        select(func.max(runs.c.id))
        .where(runs.c.kind == "reconcile", runs.c.root_id.is_not(None))
        .group_by(runs.c.root_id)
    )
    rows = conn.execute(
        select(runs.c.root_id, runs.c.status, runs.c.started, runs.c.finished).where(runs.c.id.in_(latest))
    )
    return {int(rid): (str(status), float(started), finished) for rid, status, started, finished in rows}


def entities_in_root(conn: Connection, root_id: int) -> set[tuple[str, str]]:
    """(type, key) of the entities with a file (present or not) under the root."""
    rows = conn.execute(
        select(entities.c.type, entities.c.key)
        .join(entity_links, entity_links.c.entity_id == entities.c.id)
        .where(entity_links.c.root_id == root_id)
        .distinct()
    )
    return {(str(t), str(k)) for t, k in rows}
