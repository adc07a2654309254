"""The `roots` table: configured roots by host and name, and when each was last reconciled."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from importd.catalog.tables import roots, runs


class SiteRoot(NamedTuple):
    host: str
    name: str
    path: str
    last_reconciled: float | None


def ensure_roots(conn: Connection, host: str, wanted: list[tuple[str, str]]) -> dict[str, int]:
    """Create rows for this host's configured roots (by name); a root whose path changed is
    updated. Roots and runs from before roots had a host (host '') are adopted first: until then
    one daemon used a catalog, so they are this one's."""
    conn.execute(update(roots).where(roots.c.host == "").values(host=host))
    conn.execute(update(runs).where(runs.c.host.is_(None)).values(host=host))
    existing = {
        name: (rid, path)
        for rid, name, path in conn.execute(
            select(roots.c.id, roots.c.name, roots.c.path).where(roots.c.host == host)
        )
    }
    ids: dict[str, int] = {}
    for name, path in wanted:
        if name in existing:
            rid, old_path = existing[name]
            if old_path != path:
                conn.execute(update(roots).where(roots.c.id == rid).values(path=path))
            ids[name] = rid
        else:
            new = roots.insert().values(host=host, name=name, path=path).returning(roots.c.id)
            ids[name] = int(conn.execute(new).scalar_one())
    return ids


def root_paths(conn: Connection, host: str | None = None) -> dict[int, tuple[str, str, float | None]]:
    """{root_id: (name, path, last_reconciled)} of one host's roots, or of the whole site."""
    stmt = select(roots.c.id, roots.c.name, roots.c.path, roots.c.last_reconciled)
    if host is not None:
        stmt = stmt.where(roots.c.host == host)
    return {rid: (name, path, last) for rid, name, path, last in conn.execute(stmt)}


def site_roots(conn: Connection) -> dict[int, SiteRoot]:
    """Every server's roots, for the `--site` views."""
    rows = conn.execute(select(roots.c.id, roots.c.host, roots.c.name, roots.c.path, roots.c.last_reconciled))
    return {rid: SiteRoot(host, name, path, last) for rid, host, name, path, last in rows}


def mark_reconciled(conn: Connection, root_id: int, at: float) -> None:
    conn.execute(update(roots).where(roots.c.id == root_id).values(last_reconciled=at))
