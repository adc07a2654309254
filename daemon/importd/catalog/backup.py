"""An online copy of a SQLite catalog file while the daemon runs and registers.

SQLite's backup API copies the pages `pages_per_step` at a time, so the source is read a piece
at a time and the writer is never waited for (in WAL mode a reader never blocks it anyway). One
catch, measured: when another connection commits between two steps, SQLite restarts the backup
from the first page, so under a steady stream of registrations a stepped backup never ends (5,000
steps and 500 restarts on a table of 200,000 rows with a writer committing meanwhile). The source
connection therefore holds one read transaction for the whole copy: its snapshot does not move,
nothing restarts, and the copy is that snapshot exactly; the writer goes on committing to the WAL
(which cannot be checkpointed past the snapshot until the copy ends).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from importd.catalog.engine import open_reader
from importd.catalog.failures import failure_text
from importd.threads import thread_named

PAGES_PER_STEP = 1024


class BackupCancelled(Exception):
    pass


@dataclass(frozen=True, slots=True)
class BackupFigures:
    pages: int
    page_size: int
    bytes: int
    steps: int
    seconds: float


class OnlineBackup:
    """Copies `db_file` into `target` (a new file) in a thread of its own; `wait`, `progress`
    and `cancel` are safe from any thread."""

    def __init__(self, db_file: str, target: str, pages_per_step: int = PAGES_PER_STEP) -> None:
        self.db_file = db_file
        self.target = target
        self.pages_per_step = pages_per_step
        self.error: str | None = None
        self.figures: BackupFigures | None = None
        self._remaining = 0
        self._total = 0
        self._steps = 0
        self._cancel = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="importd-backup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def progress(self) -> tuple[int, int]:
        """(pages copied, pages in all); (0, 0) before the first step."""
        return self._total - self._remaining, self._total

    def cancel(self) -> None:
        self._cancel = True

    def _step(self, _status: int, remaining: int, total: int) -> None:
        self._steps += 1
        self._remaining, self._total = remaining, total
        if self._cancel:
            raise BackupCancelled

    def _run(self) -> None:
        started = time.monotonic()
        try:
            with thread_named("importd-backup"):
                self.figures = self._copy(started)
        except BackupCancelled:
            self.error = "cancelled"
        except (sqlite3.Error, OSError) as exc:
            self.error = failure_text(exc)
        finally:
            self._done.set()

    def _copy(self, started: float) -> BackupFigures:
        src = open_reader(self.db_file)
        try:
            # Pin one snapshot for the whole copy (see the module's docstring).
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            fd = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
            dst = sqlite3.connect(self.target, isolation_level=None)
            try:
                src.backup(dst, pages=self.pages_per_step, progress=self._step)
                src.execute("COMMIT")
                # One self-contained file: no -wal beside it when it is opened elsewhere.
                dst.execute("PRAGMA journal_mode=DELETE").fetchone()
                page_size = int(dst.execute("PRAGMA page_size").fetchone()[0])
                pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
            finally:
                dst.close()
        finally:
            src.close()
        size = os.stat(self.target).st_size
        return BackupFigures(pages, page_size, size, self._steps, time.monotonic() - started)
