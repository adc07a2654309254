"""A failure as the operator reads it: one line, in the driver's own words.

SQLAlchemy's wrapper adds the SQL statement, its parameters and a link to the library's help
pages ("Background on this error at: https://sqlalche.me/..."): none of it tells an operator
what went wrong, and the statement can be thousands of characters.
"""

from __future__ import annotations

import re
import sqlite3

from sqlalchemy import exc

_HELP_LINK = re.compile(r"\s*\(Background on this error at: [^)]*\)")
# SQLite's primary result codes for a lock another connection holds: SQLITE_BUSY, SQLITE_LOCKED.
_LOCKED_CODES = {5, 6}
PG_LOCK_NOT_AVAILABLE = "55P03"


def _cause(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper."""
    orig = getattr(error, "orig", None)
    return orig if isinstance(error, exc.StatementError) and isinstance(orig, BaseException) else error


def failure_text(error: BaseException) -> str:
    """`Type: message` on one line, with no help link and no SQL."""
    cause = _cause(error)
    text = _HELP_LINK.sub("", str(cause))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(cause).__name__}: {'; '.join(lines)}" if lines else type(cause).__name__


def is_locked(error: BaseException) -> bool:
    """Another connection (another process) holds a lock the statement waited for in vain."""
    cause = _cause(error)
    if getattr(cause, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return True
    if not isinstance(cause, sqlite3.Error):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _LOCKED_CODES
    return "database is locked" in str(cause).lower()
