"""Thread names as the kernel shows them (/proc/self/task/TID/comm)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from importd.threads import thread_named

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")


def comm(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().rstrip("\n")


def in_a_thread(work: object) -> list[str]:
    seen: list[str] = []

    def run() -> None:
        tid = threading.get_native_id()
        with thread_named("importd-writer"):
            seen.append(comm(tid))
            with thread_named("importd-a-name-longer-than-the-kernel-keeps"):
                seen.append(comm(tid))
        seen.append(comm(tid))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen


def test_a_thread_is_named_for_the_duration_then_given_the_default_back() -> None:
    assert in_a_thread(None) == ["importd-writer", "importd-a-name-", "importd"]


def test_only_the_calling_thread_is_renamed() -> None:
    me = threading.get_native_id()
    before = comm(me)
    in_a_thread(None)
    assert comm(me) == before
