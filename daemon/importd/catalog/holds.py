"""The `vanish_holds` table: rows a mass disappearance would have marked missing, held until the
operator confirms or the files come back (the brake: `importd.brake`). Called by the writer
inside its transactions, and read by `status`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from importd.catalog.models import GONE_STATUSES, STATUS_MISSING
from importd.catalog.tables import chunks, files, vanish_holds
from importd.paths import subtree_bounds


def held_counts(conn: Connection) -> dict[int, int]:
    """Rows held per root (roots without a hold are absent)."""
    rows = conn.execute(select(vanish_holds.c.root_id, func.count()).group_by(vanish_holds.c.root_id))
    return {root_id: n for root_id, n in rows}


def live_count(conn: Connection, root_id: int) -> int:
    """A root's live (present or error) rows: what the brake's percentage is of."""
    query = select(func.count()).where(files.c.root_id == root_id, files.c.status.not_in(GONE_STATUSES))
    return int(conn.execute(query).scalar_one())


def hold(conn: Connection, root_id: int, file_ids: Sequence[int], since: float) -> None:
    """Hold these rows; a row held already keeps its first time."""
    already: set[int] = set()
    for part in chunks(list(file_ids)):
        already.update(
            i for (i,) in conn.execute(select(vanish_holds.c.file_id).where(vanish_holds.c.file_id.in_(part)))
        )
    new = [{"file_id": i, "root_id": root_id, "since": since} for i in file_ids if i not in already]
    if new:
        conn.execute(insert(vanish_holds), new)


def release(conn: Connection, file_ids: Sequence[int]) -> int:
    """These rows were seen again: their hold ends and they stay as they are. Returns how many
    were held."""
    n = 0
    for part in chunks(list(file_ids)):
        n += conn.execute(delete(vanish_holds).where(vanish_holds.c.file_id.in_(part))).rowcount
    return n


def release_found(conn: Connection, root_id: int, walked: bytes, still_gone: set[int]) -> None:
    """A walk of `walked` (b"": the whole root) found again every held row under it that is not
    in `still_gone`."""
    query = select(vanish_holds.c.file_id).where(vanish_holds.c.root_id == root_id)
    if walked:
        low, high = subtree_bounds(walked)
        query = query.join(files, files.c.id == vanish_holds.c.file_id).where(
            files.c.relpath >= low, files.c.relpath < high
        )
    back = [i for (i,) in conn.execute(query) if i not in still_gone]
    release(conn, back)


def confirm(conn: Connection, root_id: int) -> list[tuple[int, int, bytes, str | None]]:
    """Apply a root's hold: its rows become missing since they vanished, and the hold ends.
    Returns (id, root_id, relpath, blake3) of each row marked."""
    held = list(
        conn.execute(
            select(vanish_holds.c.file_id, vanish_holds.c.since).where(vanish_holds.c.root_id == root_id)
        )
    )
    marked: list[tuple[int, int, bytes, str | None]] = []
    by_since: dict[float, list[int]] = {}
    for file_id, since in held:
        by_since.setdefault(since, []).append(file_id)
    for since, ids in by_since.items():
        for part in chunks(ids):
            res = conn.execute(
                update(files)
                .where(and_(files.c.id.in_(part), files.c.status.not_in(GONE_STATUSES)))
                .values(status=STATUS_MISSING, missing_since=since)
                .returning(files.c.id, files.c.root_id, files.c.relpath, files.c.blake3)
            )
            marked += [(i, r, bytes(p), h) for i, r, p, h in res]
    conn.execute(delete(vanish_holds).where(vanish_holds.c.root_id == root_id))
    return marked


__all__ = ["confirm", "held_counts", "hold", "live_count", "release", "release_found"]
