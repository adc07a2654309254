"""The real daemon under faults (tools/faults.py, `make faults`, here with short holds): the state
dir's filesystem full, EIO and EACCES on reads, a root unmounted in the middle of its walk, the
catalog locked by another process, SIGSTOP and SIGCONT. Through each, `status` is asked every
200 ms over the real socket and must answer (but while stopped), no committed row is lost, the
condition is shown to the operator, and after it everything written meanwhile is catalogued."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"

# Mounts (tmpfs, FUSE) need root; every fault reads the SQLite catalog file beside the daemon.
# `alone`: each samples `status` every 200 ms against the fault's short hold; beside another test's
# daemon the unmount one once read its samples before any showed the root offline.
pytestmark = [
    pytest.mark.sqlite_only,
    pytest.mark.skipif(os.geteuid() != 0, reason="the faults mount filesystems: needs root"),
    pytest.mark.alone,
]


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faults", TOOLS / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = module
    spec.loader.exec_module(module)
    return module


faults = _harness()


def _passed(outcome: Any) -> Any:
    assert outcome.violations == [], "\n".join([*outcome.violations, *outcome.seen, *outcome.notes])
    assert outcome.lost == 0 and outcome.rows_before > 0 and outcome.recover_s is not None
    return outcome


def test_a_full_state_dir_waits_says_so_in_status_and_errors_then_catches_up(tmp_path: Path) -> None:
    outcome = _passed(faults.state_dir_full(tmp_path, 1.0))
    assert outcome.answered == 1.0
    full = "the disk is full: writes wait until space returns (OperationalError: database or disk is full)"
    assert full in outcome.seen


def test_eio_on_reads_is_an_error_line_and_heals_with_a_scan(tmp_path: Path) -> None:
    why = faults.fuse_missing()
    if why is not None:
        if os.environ.get("IMPORTD_TEST_FUSE_REQUIRED"):
            pytest.fail(f"the EIO fault needs FUSE: {why}")
        pytest.skip(f"the EIO fault needs FUSE: {why}")
    outcome = _passed(faults.eio_reads(tmp_path, 0.5))
    assert outcome.seen[:2] == [
        "directory: input/output error (failing disk or network mount?)",
        "file: read failed: input/output error (failing disk or network mount?)",
    ]


def test_eacces_on_reads_is_an_error_line_and_heals_by_itself(tmp_path: Path) -> None:
    outcome = _passed(faults.eacces_reads(tmp_path, 0.5))
    assert outcome.seen[:2] == ["directory: permission denied", "file: cannot open: permission denied"]


def test_a_root_unmounted_mid_walk_marks_nothing_missing_and_comes_back(tmp_path: Path) -> None:
    outcome = _passed(faults.unmounted_mid_walk(tmp_path, 0.5, folders=20))
    assert any("no longer a mount point" in s for s in outcome.seen)


def test_a_write_lock_held_by_another_process_delays_writes_and_loses_nothing(tmp_path: Path) -> None:
    outcome = _passed(faults.catalog_locked(tmp_path, 0.5))
    assert outcome.seen[0] == (
        "locked by another process: writes wait and are retried until it lets go"
        " (OperationalError: database is locked)"
    )


def test_an_exclusive_lock_cannot_be_taken_from_under_the_daemon_and_delays_its_start(tmp_path: Path) -> None:
    outcome = _passed(faults.catalog_locked_exclusive_mode(tmp_path, 0.5))
    assert outcome.notes == ["taken while importd runs: refused: database is locked"]
    (start,) = outcome.seen
    assert start.startswith("start-up: exit 75 after") and "another process holds its lock" in start


def test_sigstop_and_sigcont_catch_up_on_what_happened_meanwhile(tmp_path: Path) -> None:
    outcome = _passed(faults.stopped(tmp_path, 3.0))
    assert outcome.answered == 1.0 and 2.5 < outcome.watchdog_gap_s < 10
