"""What importd asks of the interpreter and the C library: each trick on its own, in a child process
where it is process-wide, so this one keeps its own settings."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from importd import runtime
from importd.runtime import GC_GEN0_THRESHOLD, collector_paused, end_stray_tasks, release_memory


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


def run_child(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_each_start_up_setting_alone() -> None:
    frozen = run_child(
        "import gc\nfrom importd.runtime import freeze_startup_objects\n"
        "t = gc.get_threshold()\nfreeze_startup_objects()\n"
        "print(gc.get_freeze_count() > 1000, gc.get_threshold() == t)"
    )
    assert frozen == ["True", "True"]
    young = run_child(
        "import gc\nfrom importd.runtime import collect_young_less_often\n"
        "t = gc.get_threshold()\ncollect_young_less_often()\n"
        "print(gc.get_threshold()[0], gc.get_threshold()[1:] == t[1:], gc.get_freeze_count())"
    )
    assert young == [str(GC_GEN0_THRESHOLD), "True", "0"]
    # mallopt has no getter: it must at least run, and leave the allocator working.
    heap = run_child(
        "from importd.runtime import keep_freed_heap\nkeep_freed_heap()\n"
        "blocks = [bytearray(1 << 16) for _ in range(1000)]\ndel blocks\nprint('ok')"
    )
    assert heap == ["ok"]


def test_release_memory_collects_cycles_and_trims() -> None:
    class Node:
        other: object = None

    collected: list[int] = []
    gc.callbacks.append(lambda phase, info: collected.append(info["generation"]) if phase == "stop" else None)
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        release_memory()  # malloc_trim too: must not fail, with or without glibc
    finally:
        gc.callbacks.pop()
    assert 2 in collected  # a full collection


def test_the_c_library_is_looked_up_once() -> None:
    assert runtime.libc() is runtime.libc()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("with_parent", [True, False])
def test_a_child_started_with_die_with_parent_ends_with_its_parent(with_parent: bool) -> None:
    """A middle process starts `sleep` and exits at once: with `die_with_parent`, the sleep is
    killed with it; without, it is orphaned and keeps running (then killed here)."""
    hook = "die_with_parent" if with_parent else "None"
    code = (
        "import os, subprocess\nfrom importd.runtime import die_with_parent\n"
        "quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"  # or run() waits for sleep
        f"p = subprocess.Popen(['sleep', '30'], preexec_fn={hook}, **quiet)\n"
        "print(p.pid, flush=True)\nos._exit(0)"
    )
    (pid,) = run_child(code)
    deadline = time.monotonic() + (5 if with_parent else 0.5)  # killed at once; or still there
    while alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert alive(int(pid)) is not with_parent
    finally:
        if alive(int(pid)):
            os.kill(int(pid), 9)


def test_the_stack_signal_dumps_every_thread_and_does_not_kill() -> None:
    # In a child: the handler stays installed for the rest of the process it is registered in.
    code = textwrap.dedent(
        """
        import os, threading, time
        from importd.runtime import DUMP_STACKS_SIGNAL, dump_stacks_on_signal

        def parked():
            time.sleep(30)

        dump_stacks_on_signal()
        threading.Thread(target=parked, name="parked", daemon=True).start()
        time.sleep(0.1)
        os.kill(os.getpid(), DUMP_STACKS_SIGNAL)
        print("alive")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "alive"
    assert "Current thread" in res.stderr
    assert "in parked" in res.stderr


def test_stray_tasks_that_await_again_when_cancelled_are_ended_and_older_tasks_kept() -> None:
    """The shape of SQLAlchemy's aiosqlite close: cancelled, it awaits a future nobody answers.
    asyncio's runner would cancel it once and wait for ever."""

    async def stubborn(never: asyncio.Future[None], ended: list[str]) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            try:
                await never
            finally:
                ended.append("stubborn")

    async def main() -> tuple[list[str], bool]:
        older = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        before = asyncio.all_tasks()
        ended: list[str] = []
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().create_task(stubborn(never, ended))
        await asyncio.sleep(0)
        await end_stray_tasks(before, deadline_s=5)
        kept = not older.done()
        older.cancel()
        return ended, kept

    ended, kept = asyncio.run(main())
    assert ended == ["stubborn"] and kept
