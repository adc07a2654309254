"""Thread priority for sweeps: the nice value chosen, and what is reported when it cannot be set.
(test_scrub.py checks that a lowered thread, and only it, runs at that priority.)"""

from __future__ import annotations

import os

import pytest

from importd import priority
from importd.priority import LOWER_BY, run_lowered, sweep_nice, thread_io_class


def test_sweep_nice_is_the_daemons_plus_ten_at_most_19() -> None:
    own = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert sweep_nice() == min(19, own + LOWER_BY)
    assert sweep_nice(100) == 19


def test_no_c_library_is_a_problem_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority, "libc", lambda: None)
    seen: list[list[str]] = []
    assert run_lowered(lambda: 42, on_problems=seen.append) == 42
    if priority.platform.machine() in priority._SYSCALLS:
        assert seen == [["cannot set the idle I/O class: no C library"]]
        assert thread_io_class() is None


def test_an_unknown_machine_has_no_io_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority.platform, "machine", lambda: "pdp11")
    assert thread_io_class() is None
    seen: list[list[str]] = []
    run_lowered(lambda: None, on_problems=seen.append)
    assert seen == [["I/O priority not supported on pdp11"]]
