"""Runs and their log: started, finished, abandoned by a crash, read back newest first."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from importd.catalog import runs
from importd.catalog.tables import run_log
from tests.unit.importd.catalog.conftest import read


def test_a_run_is_started_finished_and_read_back(catalog: Connection) -> None:
    first = runs.start_run(catalog, "h", "reconcile", "startup", 1, None, 10.0)
    second = runs.start_run(catalog, "h", "sweep", "check", None, "r", 20.0)
    runs.finish_run(catalog, first, {"status": "completed", "finished": 11.0, "files_seen": 3})
    catalog.execute(run_log.insert().values(run_id=first, action="created", entity="Alice", at=10.5))
    catalog.execute(run_log.insert().values(run_id=first, action="updated", entity="Alice", at=10.6))
    assert [r["id"] for r in read(catalog, runs.run_rows, 10)] == [second, first]
    assert [r["id"] for r in read(catalog, runs.last_runs, "sweep", 5)] == [second]
    row, logs = read(catalog, runs.run_row, first, 1)
    assert row is not None and (row["status"], row["files_seen"], row["finished"]) == ("completed", 3, 11.0)
    assert [entry["action"] for entry in logs] == ["created"], "the log is limited, oldest first"
    assert read(catalog, runs.run_row, 999, 10) == (None, [])


def test_runs_left_running_by_a_crash_are_interrupted(catalog: Connection) -> None:
    done = runs.start_run(catalog, "h", "reconcile", "startup", 1, None, 1.0)
    runs.finish_run(catalog, done, {"status": "completed", "finished": 2.0})
    runs.start_run(catalog, "h", "reconcile", "scan", 1, None, 3.0)
    assert runs.abandon_running(catalog, "h", 9.0) == 1
    assert [(r["status"], r["finished"]) for r in read(catalog, runs.run_rows, 10)] == [
        ("interrupted", 9.0),
        ("completed", 2.0),
    ]
