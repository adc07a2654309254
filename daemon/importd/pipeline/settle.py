"""Settle: a file goes on only once its size, mtime and ctime have stayed the same for
`settle_seconds`. A pure state machine; the driver passes the clock in (wall-clock seconds, since
it is compared with the file's ctime) and re-stats what `due()` names.

ctime is the shortcut that keeps latency low without trusting mtime: every write updates it and
no user tool can set it back, so a file whose ctime is already settle_seconds old has been still
that long, even when `cp -p` or rsync restored an old mtime.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from importd.items import FileStat

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Pending:
    stat: FileStat
    stable_since: float
    deadline: float


class SettleTracker(Generic[K]):
    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._pending: dict[K, _Pending] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def observe(self, key: K, stat: FileStat, now: float) -> bool:
        """Record a fresh stat of `key`. Returns True when the file is settled (and forgets it);
        otherwise it stays pending until its deadline, when the driver must stat it again."""
        entry = self._pending.get(key)
        if entry is None or entry.stat != stat:
            stable_since = min(now, stat.ctime_ns / 1e9)
            entry = _Pending(stat, stable_since, stable_since + self.settle_seconds)
            self._pending[key] = entry
        if now >= entry.deadline:
            del self._pending[key]
            return True
        self._push(entry.deadline, key)
        return False

    def forget(self, key: K) -> None:
        self._pending.pop(key, None)

    def due(self, now: float) -> list[K]:
        """Keys whose deadline has passed: stat them again and call `observe`."""
        out: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, _, key = heapq.heappop(self._heap)
            entry = self._pending.get(key)
            if entry is not None and entry.deadline == deadline and key not in out:
                out.append(key)
        return out

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, _, key = self._heap[0]
            entry = self._pending.get(key)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(self._heap)  # stale: the key was re-observed or forgotten
        return None

    def _push(self, deadline: float, key: K) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, key))
