"""The `hosts` table: each server's daemon on a shared catalog, with its heartbeat."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from importd.catalog.engine import dialect_insert
from importd.catalog.tables import hosts


class HostBeat(NamedTuple):
    name: str
    version: str
    pid: int
    started: float
    heartbeat: float
    interval: float
    stopped: float | None


def beat(conn: Connection, me: HostBeat) -> None:
    """Record that this host's daemon is alive (a start writes every column; later beats too,
    which is one statement either way)."""
    values = me._asdict()
    stmt = dialect_insert(conn, hosts).values(values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"], set_={k: v for k, v in values.items() if k != "name"}
        )
    )


def mark_stopped(conn: Connection, name: str, at: float) -> None:
    conn.execute(update(hosts).where(hosts.c.name == name).values(stopped=at, heartbeat=at))


def others_exist(conn: Connection, me: str) -> bool:
    """Does another server's daemon use this catalog?"""
    return conn.execute(select(hosts.c.name).where(hosts.c.name != me).limit(1)).first() is not None


def host_rows(conn: Connection) -> list[HostBeat]:
    rows = conn.execute(
        select(
            hosts.c.name, hosts.c.version, hosts.c.pid, hosts.c.started, hosts.c.heartbeat, hosts.c.interval,
            hosts.c.stopped,
        ).order_by(hosts.c.name)
    )  # fmt: skip
    return [HostBeat(*r) for r in rows]
