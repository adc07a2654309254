"""ExtractionPool: values back, failures as values, time limits that kill, crashes survived, priority.

Work functions are standard-library callables so worker processes need not import this test module.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest

from importd.media.failure import ExtractionFailure
from importd.media.pool import ExtractionPool, Priority, default_pool_size


def test_default_size_leaves_a_core() -> None:
    assert default_pool_size() == max(1, (os.cpu_count() or 1) - 1)
    with pytest.raises(ValueError, match="at least one worker"):
        ExtractionPool(0)


def test_values_errors_timeouts_and_crashes_are_all_values() -> None:
    async def main() -> list[object]:
        with ExtractionPool(2) as pool:
            return [
                await pool.run("image", pow, 2, 10, timeout=30),
                await pool.run("image", int, "not a number", timeout=30),
                await pool.run("av", time.sleep, 60, timeout=0.5),
                await pool.run("video_fp", os.abort, timeout=30),
                await pool.run("image", pow, 3, 3, timeout=30),  # the pool recovered
            ]

    started = time.monotonic()
    value, error, hung, crashed, after = anyio.run(main)
    assert time.monotonic() - started < 20  # the hung task did not hold anything up
    assert value == 1024 and after == 27
    assert isinstance(error, ExtractionFailure) and error.extractor == "image"
    assert error.reason.startswith("ValueError: invalid literal")
    assert hung == ExtractionFailure("av", "timed out after 0.5 s; the worker was killed")
    assert isinstance(crashed, ExtractionFailure) and crashed.reason.startswith("worker died")


def test_stuck_tasks_do_not_stall_the_others() -> None:
    async def main() -> tuple[list[object], float]:
        results: list[object] = []
        with ExtractionPool(2) as pool:

            async def one(seconds: float, timeout: float) -> None:
                results.append(await pool.run("image", time.sleep, seconds, timeout=timeout))

            started = time.monotonic()
            async with anyio.create_task_group() as group:
                group.start_soon(one, 60, 1.0)
                for _ in range(6):
                    group.start_soon(one, 0.01, 10)
            return results, time.monotonic() - started

    results, elapsed = anyio.run(main)
    assert results.count(None) == 6
    assert sum(isinstance(r, ExtractionFailure) for r in results) == 1
    assert elapsed < 15


def test_foreground_work_goes_before_background_work() -> None:
    async def main() -> list[str]:
        order: list[str] = []
        with ExtractionPool(1) as pool:

            async def job(name: str, seconds: float, priority: Priority) -> None:
                await pool.run("image", time.sleep, seconds, timeout=30, priority=priority)
                order.append(name)

            async with anyio.create_task_group() as group:
                group.start_soon(job, "first", 0.5, Priority.FOREGROUND)
                await anyio.sleep(0.1)  # the single worker is now busy
                group.start_soon(job, "rerun-1", 0.01, Priority.BACKGROUND)
                group.start_soon(job, "rerun-2", 0.01, Priority.BACKGROUND)
                await anyio.sleep(0.05)
                group.start_soon(job, "new-file", 0.01, Priority.FOREGROUND)
        return order

    assert anyio.run(main) == ["first", "new-file", "rerun-1", "rerun-2"]


def test_cancelling_the_caller_frees_the_worker() -> None:
    async def main() -> tuple[object, float]:
        with ExtractionPool(1) as pool:
            with anyio.move_on_after(0.5):
                await pool.run("image", time.sleep, 60, timeout=120)
            started = time.monotonic()
            result = await pool.run("image", pow, 2, 3, timeout=30)
            return result, time.monotonic() - started

    result, waited = anyio.run(main)
    assert result == 8
    assert waited < 15


def test_memory_limit_turns_a_runaway_allocation_into_a_failure() -> None:
    async def main() -> tuple[object, object]:
        with ExtractionPool(1, memory_limit_mb=400) as pool:
            runaway = await pool.run("image", bytearray, 2 * 1024**3, timeout=30)
            fine = await pool.run("image", len, bytearray(1024), timeout=30)
        return runaway, fine

    runaway, fine = anyio.run(main)
    assert runaway == ExtractionFailure("image", "MemoryError")
    assert fine == 1024


def test_closed_pool_refuses_work() -> None:
    async def main() -> object:
        pool = ExtractionPool(1)
        pool.close()
        pool.close()  # idempotent
        return await pool.run("image", pow, 2, 2, timeout=5)

    assert anyio.run(main) == ExtractionFailure("image", "extraction pool is closed")
