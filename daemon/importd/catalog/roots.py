"""The `roots` table: configured roots by name, and when each was last reconciled."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from importd.catalog.tables import roots


def ensure_roots(conn: Connection, wanted: list[tuple[str, str]]) -> dict[str, int]:
    """Create rows for configured roots (by name); a root whose path changed is updated."""
    existing = {
        name: (rid, path) for rid, name, path in conn.execute(select(roots.c.id, roots.c.name, roots.c.path))
    }
    ids: dict[str, int] = {}
    for name, path in wanted:
        if name in existing:
            rid, old_path = existing[name]
            if old_path != path:
                conn.execute(update(roots).where(roots.c.id == rid).values(path=path))
            ids[name] = rid
        else:
            new = roots.insert().values(name=name, path=path).returning(roots.c.id)
            ids[name] = int(conn.execute(new).scalar_one())
    return ids


def root_paths(conn: Connection) -> dict[int, tuple[str, str, float | None]]:
    rows = conn.execute(select(roots.c.id, roots.c.name, roots.c.path, roots.c.last_reconciled))
    return {rid: (name, path, last) for rid, name, path, last in rows}


def mark_reconciled(conn: Connection, root_id: int, at: float) -> None:
    conn.execute(update(roots).where(roots.c.id == root_id).values(last_reconciled=at))
