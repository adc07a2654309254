"""Maintenance reads and writes: the symlinks a walk met, file move history for repair
proposals, the scrub's queue and stamps, and each sweep's findings. `maintenance/` gives them
meaning (classification, proposals, sweeps); the statements are here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.engine import Connection

from importctl.findings import Finding
from importd.catalog.engine import dialect_insert
from importd.catalog.models import LIVE_PATH_WHERE, STATUS_MISSING, STATUS_PRESENT
from importd.catalog.tables import chunks, file_moves, files, findings, symlinks
from importd.items import record
from importd.paths import subtree_bounds


def moves_under(conn: Connection, root_id: int, relpath: bytes) -> list[tuple[bytes, float, int, bytes]]:
    """(old relpath, when, current root_id, current relpath) of present files that moved away
    from `relpath` or from below it, newest first."""
    low, high = subtree_bounds(relpath)
    rows = conn.execute(
        select(file_moves.c.old_relpath, file_moves.c.at, files.c.root_id, files.c.relpath)
        .join(files, files.c.id == file_moves.c.file_id)
        .where(
            file_moves.c.old_root_id == root_id,
            or_(
                file_moves.c.old_relpath == relpath,
                and_(file_moves.c.old_relpath >= low, file_moves.c.old_relpath < high),
            ),
            files.c.status == STATUS_PRESENT,
        )
        .order_by(file_moves.c.at.desc())
    )
    return [(bytes(old), at, rid, bytes(rel)) for old, at, rid, rel in rows]


def last_known_at(conn: Connection, root_id: int, relpath: bytes) -> tuple[int, str | None] | None:
    """(size, blake3) of the last row at the path, else of the last row that moved away from it."""
    row = conn.execute(
        select(files.c.size, files.c.blake3)
        .where(files.c.root_id == root_id, files.c.relpath == relpath)
        .order_by(files.c.last_seen.desc())
        .limit(1)
    ).first()
    if row is None:
        row = conn.execute(
            select(files.c.size, files.c.blake3)
            .join(file_moves, file_moves.c.file_id == files.c.id)
            .where(file_moves.c.old_root_id == root_id, file_moves.c.old_relpath == relpath)
            .order_by(file_moves.c.at.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row is not None else None


def present_files(conn: Connection, root_ids: Sequence[int]) -> list[tuple[int, bytes, int]]:
    """(root_id, relpath, size) of every present file under these roots."""
    rows = conn.execute(
        select(files.c.root_id, files.c.relpath, files.c.size).where(
            files.c.status == STATUS_PRESENT, files.c.root_id.in_(list(root_ids))
        )
    )
    return [(rid, bytes(rel), size) for rid, rel, size in rows]


def present_with_hash(conn: Connection, blake3: str, root_ids: Sequence[int]) -> list[tuple[int, bytes]]:
    """(root_id, relpath) of the present files with this content under these roots."""
    rows = conn.execute(
        select(files.c.root_id, files.c.relpath).where(
            files.c.blake3 == blake3, files.c.status == STATUS_PRESENT, files.c.root_id.in_(list(root_ids))
        )
    )
    return [(rid, bytes(rel)) for rid, rel in rows]


@record
class SymlinkSeen:
    """A symlink as a walk met it (`maintenance.links.LinkInfo`, reduced to its columns)."""

    relpath: bytes
    target: bytes
    resolved: bytes | None
    state: str


def record_links(
    conn: Connection, root_id: int, links: Sequence[SymlinkSeen], now: float, complete: bool
) -> None:
    """Upsert the symlinks a walk met; with `complete` (a whole-root walk) the rest are gone. One
    statement with a row per link: a lookup then an insert or update per link cost 1.3 s of every
    restart of a root with 30,000 links (a symlink farm)."""
    if links:
        insert = dialect_insert(conn, symlinks)
        stmt = insert.on_conflict_do_update(
            index_elements=["root_id", "relpath"],
            set_={k: insert.excluded[k] for k in ("target", "resolved", "state", "last_seen")},
        )
        rows = [
            {
                "root_id": root_id,
                "relpath": link.relpath,
                "target": link.target,
                "resolved": link.resolved,
                "state": link.state,
                "last_seen": now,
            }
            for link in links
        ]
        conn.execute(stmt, rows)
    if complete:
        conn.execute(
            update(symlinks)
            .where(symlinks.c.root_id == root_id, symlinks.c.last_seen < now, symlinks.c.state != "gone")
            .values(state="gone")
        )


def link_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(symlinks.c.state, func.count()).group_by(symlinks.c.state))
    return {state: int(n) for state, n in rows if state != "gone"}


def scrub_state(conn: Connection) -> dict[str, Any]:
    row = conn.execute(
        select(
            func.count(),
            func.count(files.c.last_verified),
            func.min(files.c.last_verified),
        ).where(files.c.status == STATUS_PRESENT, files.c.blake3.is_not(None))
    ).one()
    return {"files": int(row[0]), "verified": int(row[1]), "oldest_verified": row[2]}


def scrub_targets(
    conn: Connection, root_ids: Sequence[int], started: float, limit: int
) -> list[dict[str, Any]]:
    """Oldest verification first (never verified first of all)."""
    stmt = (
        select(
            files.c.id,
            files.c.root_id,
            files.c.relpath,
            files.c.size,
            files.c.mtime_ns,
            files.c.inode,
            files.c.dev,
            files.c.blake3,
            files.c.last_verified,
        )
        .where(
            files.c.status == STATUS_PRESENT,
            files.c.blake3.is_not(None),
            files.c.root_id.in_(list(root_ids)),
            or_(files.c.last_verified.is_(None), files.c.last_verified < started),
        )
        .order_by(files.c.last_verified.is_not(None), files.c.last_verified, files.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) | {"relpath": bytes(r.relpath)} for r in conn.execute(stmt)]


def mark_verified(conn: Connection, stamps: Sequence[tuple[int, float]]) -> None:
    if stamps:
        stmt = update(files).where(files.c.id == bindparam("row_id")).values(last_verified=bindparam("at"))
        conn.execute(stmt, [{"row_id": rid, "at": at} for rid, at in stamps])


def missing_rows(conn: Connection, root_id: int, prefix: bytes | None) -> list[tuple[bytes, float | None]]:
    """(relpath, missing_since) of the rows marked missing in a root (or at or under `prefix`),
    by path: the ghosts a sweep reports. A missing row whose path holds a live row again (a file
    moved or copied over it) is that path's history, not a gone file, and is left out."""
    live = files.alias("live")
    cond = [files.c.root_id == root_id, files.c.status == STATUS_MISSING]
    if prefix:
        low, high = subtree_bounds(prefix)
        cond.append(or_(files.c.relpath == prefix, and_(files.c.relpath >= low, files.c.relpath < high)))
    # The live-path index's own condition, spelled as it is, so each probe is one index seek
    # (with another spelling SQLite would scan the root's rows once per missing row).
    occupied = (
        select(live.c.id)
        .where(
            live.c.root_id == files.c.root_id,
            live.c.relpath == files.c.relpath,
            text(f"live.{LIVE_PATH_WHERE}"),
        )
        .exists()
    )
    rows = conn.execute(
        select(files.c.relpath, files.c.missing_since)
        .where(*cond, ~occupied)
        .order_by(files.c.relpath, files.c.id)
    )
    return [(bytes(rel), since) for rel, since in rows]


def store_findings(conn: Connection, run_id: int, found: Sequence[Finding]) -> None:
    rows = [
        {
            "run_id": run_id,
            "kind": f.kind,
            "path": f.path,
            "detail": f.detail[:2000],
            "missing_since": f.missing_since,
        }
        for f in found
    ]
    for part in chunks(rows, 5000):
        conn.execute(findings.insert(), list(part))


def load_findings(conn: Connection, run_id: int) -> list[Finding]:
    rows = conn.execute(
        select(findings.c.kind, findings.c.path, findings.c.detail, findings.c.missing_since)
        .where(findings.c.run_id == run_id)
        .order_by(findings.c.id)
    )
    return [Finding(kind, bytes(path), detail, since) for kind, path, detail, since in rows]
