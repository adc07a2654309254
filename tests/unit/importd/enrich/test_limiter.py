"""The sliding-window limiter on a virtual clock: never more than `limit` starts in any window,
and no slower than it must be."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd.enrich.limiter import RateLimiter, SlidingWindow
from tests.provider_server import max_in_window


def starts(limit: int, window: float, arrivals: list[float]) -> list[float]:
    """Each arrival starts as soon as the state machine allows, in turn."""
    state = SlidingWindow(limit, window)
    out: list[float] = []
    now = 0.0
    for arrival in sorted(arrivals):
        now = max(now, arrival)
        now = state.next_start(now)
        assert state.start(now)
        out.append(now)
    return out


def test_a_burst_takes_the_whole_limit_then_waits_a_window() -> None:
    assert starts(3, 10.0, [0.0] * 7) == [0, 0, 0, 10, 10, 10, 20]


def test_a_token_bucket_would_let_twice_the_limit_through_this_one_does_not() -> None:
    # 40 at t=9.99 and 40 at t=10.0: a bucket refilled at t=10 lets 80 into [9.99, 10.99).
    times = starts(40, 10.0, [9.99] * 40 + [10.0] * 40)
    assert max_in_window(times, 10.0) == 40
    assert times[40] == pytest.approx(19.99)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 12),
    window=st.floats(0.1, 20.0),
    arrivals=st.lists(st.floats(0.0, 60.0, allow_nan=False), min_size=1, max_size=80),
)
def test_no_window_ever_holds_more_than_the_limit(limit: int, window: float, arrivals: list[float]) -> None:
    times = starts(limit, window, arrivals)
    assert max_in_window(times, window) <= limit
    # And nothing waits that need not: each start is its arrival, or a window after an earlier start.
    for i, (t, a) in enumerate(zip(times, sorted(arrivals), strict=True)):
        assert t == a or t == times[i - 1] or (i >= limit and t == pytest.approx(times[i - limit] + window))


def test_refused_start_records_nothing() -> None:
    state = SlidingWindow(1, 5.0)
    assert state.start(0.0)
    assert not state.start(4.9)
    assert state.next_start(4.9) == 5.0
    assert state.start(5.0)


def test_block_until_holds_every_start() -> None:
    state = SlidingWindow(10, 1.0)
    state.block_until(3.0)
    assert state.next_start(0.5) == 3.0
    assert not state.start(2.9)
    assert state.start(3.0)


def test_guard_widens_the_window() -> None:
    state = SlidingWindow(1, 1.0, guard=0.05)
    state.start(0.0)
    assert state.next_start(0.0) == pytest.approx(1.05)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.sleep(0)


def test_the_async_driver_shares_one_limit_among_workers() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(40, 10.0, clock=clock, sleep=clock.sleep)
    got: list[float] = []

    async def worker(n: int) -> None:
        rng = random.Random(n)
        for _ in range(25):
            got.append(await limiter.acquire())
            await clock.sleep(rng.random() * 0.01)  # the request's own time

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(worker, n)

    anyio.run(main)
    assert len(got) == 200
    assert max_in_window(got, 10.0) <= 40
    # 200 requests at 40 per 10 s: the last starts in the fifth window, at 40 s, not later.
    assert max(got) < 40.0 + 0.5


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)
    with pytest.raises(ValueError):
        SlidingWindow(1, 0.0)
