"""The provider's rate limit: never more than `limit` requests start in any window of `window`
seconds, across every worker.

A token bucket whose burst is the whole limit lets twice the limit through a window that
straddles a refill; a sliding log of the last `limit` start times cannot: a start is allowed
only when the `limit`-th start before it is at least `window` seconds old, so any `limit + 1`
consecutive starts span at least `window` (a half-open window [t, t + window) holds at most
`limit`). `SlidingWindow` is the pure state machine (the clock is passed in); `RateLimiter` is the
thin async driver the workers share.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio


class SlidingWindow:
    def __init__(self, limit: int, window: float, guard: float = 0.0) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window above 0")
        self.limit = limit
        # `guard` widens the window a little: the provider sees arrivals, which a network's
        # jitter can bring closer together than the starts were.
        self.window = window + guard
        self._starts: deque[float] = deque(maxlen=limit)
        self._blocked_until = 0.0

    def next_start(self, now: float) -> float:
        """The earliest time a request may start (`now` when it may start now)."""
        at = max(now, self._blocked_until)
        if len(self._starts) == self.limit:
            at = max(at, self._starts[0] + self.window)
        return at

    def start(self, now: float) -> bool:
        """Record a start at `now` if one is allowed then; False (nothing recorded) if not."""
        if self.next_start(now) > now:
            return False
        self._starts.append(now)
        return True

    def block_until(self, until: float) -> None:
        """Nothing starts before `until` (a `Retry-After` holds back every worker)."""
        self._blocked_until = max(self._blocked_until, until)


class RateLimiter:
    """`await acquire()` returns when this request may start; a lock keeps the waiters in turn."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        guard: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.state = SlidingWindow(limit, window, guard)
        self._clock = clock
        self._sleep = sleep
        self._lock = anyio.Lock()

    async def acquire(self) -> float:
        """Wait for a start; returns its time on the limiter's clock."""
        async with self._lock:
            while True:
                now = self._clock()
                if self.state.start(now):
                    return now
                await self._sleep(self.state.next_start(now) - now)

    def hold(self, seconds: float) -> None:
        self.state.block_until(self._clock() + seconds)


__all__ = ["RateLimiter", "SlidingWindow"]
