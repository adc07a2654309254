"""The crash harness (tools/crash.py, `make soak`): two real trials pass, it sees a broken catalog,
and a daemon that stops answering becomes a violation with every thread's stack saved."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"

# The trials name their own SQLite catalog (`make soak --catalog postgresql` runs them on a server).
pytestmark = pytest.mark.catalog_free


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash", TOOLS / "crash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash"] = module
    spec.loader.exec_module(module)
    return module


crash = _harness()


def _running_trial(tmp_path: Path, seed: int = 7) -> object:
    trial = crash.Trial(
        seed, tmp_path, tmp_path / "out", f"sqlite:///{tmp_path / 'state' / 'catalog.db'}", 60
    )
    trial.tree.generate(60)
    assert trial.start(answering=True)
    assert trial.quiet(), trial.violations
    return trial


def test_two_trials_kill_the_daemon_and_find_the_catalog_true(tmp_path: Path) -> None:
    lines: list[str] = []
    results = crash.run_trials(2, 4242, tmp_path / "out", files=120, echo=lines.append)
    assert [v.what for r in results for v in r.violations] == [], "\n".join(lines)
    assert sum(r.kills.total() for r in results) >= 2
    assert "violations" in crash.table(results, "sqlite", 1.0)


def test_the_checks_see_a_wrong_hash_a_lost_row_and_an_orphan_content(tmp_path: Path) -> None:
    trial = _running_trial(tmp_path)
    try:
        assert crash.check(trial.tree, trial.daemon, trial.committed) == []
        db = sqlite3.connect(tmp_path / "state" / "catalog.db", timeout=30)
        with db:
            (victim, relpath) = db.execute(
                "SELECT id, relpath FROM files WHERE status = 'present' ORDER BY id LIMIT 1"
            ).fetchone()
            other = db.execute("SELECT blake3 FROM files WHERE blake3 IS NOT NULL AND id != ?", (victim,))
            db.execute("UPDATE files SET blake3 = ? WHERE id = ?", (other.fetchone()[0], victim))
            db.execute("INSERT INTO contents (blake3, size, first_seen) VALUES (?, 1, 0)", ("0" * 64,))
            gone = db.execute("SELECT MAX(id) FROM files").fetchone()[0]
            db.execute("DELETE FROM entity_files WHERE file_id = ?", (gone,))
            db.execute("DELETE FROM file_moves WHERE file_id = ?", (gone,))
            db.execute("DELETE FROM files WHERE id = ?", (gone,))
        db.close()
        trial.committed[gone] = b"lost"
        found = "\n".join(crash.check(trial.tree, trial.daemon, trial.committed))
        assert f"{bytes(relpath)!r}: on disk with" in found
        assert "orphan content rows" in found and "0" * 64 in found
        assert f"were deleted: ids [{gone}]" in found
    finally:
        trial.daemon.kill()


def test_a_daemon_that_stops_answering_is_a_violation_with_its_stacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = _running_trial(tmp_path)
    daemon = trial.daemon
    try:
        # The stacks of a daemon that answers: every thread's, in its log, and it lives on.
        saved = Path(daemon.capture_stacks(tmp_path / "out" / "stacks.txt"))
        text = saved.read_text()
        assert "Thread 0x" in text and 'File "' in text and "importd" in text
        assert daemon.status()["version"]
        # Stopped (SIGSTOP): no answer within the (shortened) limit is a violation, not a wait.
        monkeypatch.setattr(crash, "ANSWER_S", 1.0)
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        why = daemon.wait_quiet()
        assert why is not None and "did not answer status" in why
        assert time.monotonic() - t0 < 10
    finally:
        if daemon.proc is not None:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        daemon.kill()
