"""A failure as the operator reads it: the driver's words on one line, no SQL, no help link."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from importd.catalog.failures import failure_text, is_locked


def _wrapped(code: int, message: str) -> sa_exc.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = code
    return sa_exc.OperationalError("INSERT INTO files (root_id, relpath) VALUES (?, ?)", (1, b"x"), err)


def test_sqlalchemys_statement_and_help_link_are_left_out() -> None:
    error = _wrapped(sqlite3.SQLITE_FULL, "database or disk is full")
    assert "sqlalche.me" in str(error) and "INSERT" in str(error)  # what the wrapper says
    assert failure_text(error) == "OperationalError: database or disk is full"


def test_a_help_link_outside_a_driver_error_is_cut_and_lines_are_joined() -> None:
    error = sa_exc.InvalidRequestError("this transaction is inactive", code="8s2b")
    assert "sqlalche.me" in str(error)
    assert failure_text(error) == "InvalidRequestError: this transaction is inactive"
    assert failure_text(ValueError("first\n  second\n")) == "ValueError: first; second"
    assert failure_text(RuntimeError()) == "RuntimeError"


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("lock not available")
        self.sqlstate = sqlstate


def test_a_lock_another_process_holds_is_told_from_other_failures() -> None:
    assert is_locked(_wrapped(sqlite3.SQLITE_BUSY, "database is locked"))
    assert is_locked(_wrapped(sqlite3.SQLITE_LOCKED, "database table is locked"))
    assert is_locked(sa_exc.OperationalError("x", (), sqlite3.OperationalError("database is locked")))
    assert not is_locked(_wrapped(sqlite3.SQLITE_FULL, "database or disk is full"))
    assert is_locked(sa_exc.OperationalError("x", (), _PgError("55P03")))
    assert not is_locked(sa_exc.OperationalError("x", (), _PgError("53100")))
    assert not is_locked(OSError("locked"))
