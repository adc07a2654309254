"""The `runs` table (reconciles, sweeps) and its per-entity `run_log`. Runs are written through
the single writer (sync connection); the API reads them with typed selects over an
`AsyncSession`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from importd.catalog.models import RunLogRow, RunRow
from importd.catalog.tables import runs


def start_run(
    conn: Connection, host: str, kind: str, trigger: str, root_id: int | None, target: str | None, at: float
) -> int:
    new = runs.insert().values(
        kind=kind, trigger=trigger, root_id=root_id, target=target, status="running", started=at, host=host
    )
    return int(conn.execute(new.returning(runs.c.id)).scalar_one())


def finish_run(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def abandon_running(conn: Connection, host: str, at: float) -> int:
    """This host's runs left `running` by a crash: the start-up reconcile redoes their work.
    Another server's running runs are its own daemon's business."""
    res = conn.execute(
        update(runs)
        .where(runs.c.status == "running", runs.c.host == host)
        .values(status="interrupted", finished=at)
    )
    return res.rowcount or 0


# Lists are read as the models' columns, not as a model per row: building the models made
# `importctl runs` 1.5 times slower and a run's log (10,000 lines by default) 3 times.
_RUN: tuple[Any, ...] = tuple(getattr(RunRow, name) for name in RunRow.model_fields)
_LOG: tuple[Any, ...] = tuple(getattr(RunLogRow, name) for name in RunLogRow.model_fields)


async def last_runs(session: AsyncSession, kind: str, limit: int) -> list[dict[str, Any]]:
    stmt = select(*_RUN).where(RunRow.kind == kind).order_by(col(RunRow.id).desc()).limit(limit)
    return [dict(r._mapping) for r in await session.exec(stmt)]


async def run_rows(session: AsyncSession, limit: int) -> list[dict[str, Any]]:
    stmt = select(*_RUN).order_by(col(RunRow.id).desc()).limit(limit)
    return [dict(r._mapping) for r in await session.exec(stmt)]


async def run_row(
    session: AsyncSession, run_id: int, log_limit: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    row = await session.get(RunRow, run_id)
    if row is None:
        return None, []
    logs = await session.exec(
        select(*_LOG).where(RunLogRow.run_id == run_id).order_by(col(RunLogRow.id)).limit(log_limit)
    )
    return row.model_dump(), [dict(r._mapping) for r in logs]
