"""The `runs` table (reconciles, sweeps) and its per-entity `run_log`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from importd.catalog.tables import run_log, runs


def start_run(
    conn: Connection, kind: str, trigger: str, root_id: int | None, target: str | None, at: float
) -> int:
    res = conn.execute(
        runs.insert().values(
            kind=kind, trigger=trigger, root_id=root_id, target=target, status="running", started=at
        )
    )
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def finish_run(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def abandon_running(conn: Connection, at: float) -> int:
    """Runs left `running` by a crash: the start-up reconcile redoes their work."""
    res = conn.execute(
        update(runs).where(runs.c.status == "running").values(status="interrupted", finished=at)
    )
    return res.rowcount or 0


def last_runs(conn: Connection, kind: str, limit: int) -> list[dict[str, Any]]:
    stmt = select(runs).where(runs.c.kind == kind).order_by(runs.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def run_rows(conn: Connection, limit: int) -> list[dict[str, Any]]:
    stmt = select(runs).order_by(runs.c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def run_row(
    conn: Connection, run_id: int, log_limit: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        return None, []
    logs = conn.execute(
        select(run_log).where(run_log.c.run_id == run_id).order_by(run_log.c.id).limit(log_limit)
    )
    return dict(row._mapping), [dict(r._mapping) for r in logs]
