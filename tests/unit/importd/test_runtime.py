"""The daemon's process-wide settings: the collector's first generation and frozen start-up objects."""

from __future__ import annotations

import gc
import subprocess
import sys

from importd.runtime import GC_GEN0_THRESHOLD, collector_paused


def test_tune_runtime_freezes_start_up_objects_and_collects_less_often() -> None:
    # In a child: gc.freeze and mallopt are process-wide, and the test process keeps its own.
    code = (
        "import gc\n"
        "from importd.runtime import tune_runtime\n"
        "before = gc.get_threshold()\n"
        "tune_runtime()\n"
        "print(before[1:] == gc.get_threshold()[1:], gc.get_threshold()[0], gc.get_freeze_count() > 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", str(GC_GEN0_THRESHOLD), "True"]
    assert gc.get_threshold()[0] != GC_GEN0_THRESHOLD  # this process untouched


def test_the_collector_is_paused_for_overlapping_uses_and_restored_after() -> None:
    assert gc.isenabled()
    outer = collector_paused()
    outer.__enter__()
    assert not gc.isenabled()
    with collector_paused():  # a second root's reconcile, overlapping the first
        assert not gc.isenabled()
    assert not gc.isenabled(), "the first is still running"
    outer.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_when_the_paused_work_fails() -> None:
    try:
        with collector_paused():
            raise RuntimeError("walk failed")
    except RuntimeError:
        pass
    assert gc.isenabled()
