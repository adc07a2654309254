"""The brake on a mass disappearance: when does a vanishing become a hold, and which watcher
deletions count as one burst. Pure: counts and the clock are passed in.

A share that half-unmounts, a sync tool that empties a folder or a mistaken `rm -r` would
otherwise mark thousands of rows missing at once and open every gap. When one reconcile, or one
burst of watcher deletions, would mark more than `max_vanish_files` files or more than
`max_vanish_percent` % of a root's live files missing, the catalog writer holds them instead
(`importd.catalog.holds`): the rows stay `present`, the root shows `held`, and the operator
applies the change with `importctl confirm-missing ROOT`. Fewer than `MASS_MIN_FILES` files are
never a mass event: a single deleted file in a small root is marked missing at once.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from importd.config import SafetyConfig

# Below this many files a disappearance is never held, whatever its share of the root: three
# files of a ten-file root is 30 %, and no library is lost that way.
MASS_MIN_FILES = 10
# Watcher deletions of a root that arrive less than BURST_QUIET_S apart are one burst, closed at
# most BURST_MAX_S after its first deletion (so a slow, steady trickle is still marked). A
# deletion therefore reaches the catalog 0.3 s after the watcher saw it (a gap opens within a
# second of the deletion); an `rm -r` or a sync tool emptying a folder delivers its events far
# closer together than that.
BURST_QUIET_S = 0.3
BURST_MAX_S = 3.0


@dataclass(frozen=True, slots=True)
class VanishLimits:
    max_files: int = 1000
    max_percent: float = 20.0

    @classmethod
    def of(cls, safety: SafetyConfig) -> VanishLimits:
        return cls(safety.max_vanish_files, safety.max_vanish_percent)


def should_hold(vanishing: int, live: int, limits: VanishLimits) -> bool:
    """Would marking `vanishing` of a root's `live` (present or error) rows missing be a mass
    disappearance? `live` counts the vanishing rows too."""
    if vanishing < MASS_MIN_FILES:
        return False
    return vanishing > limits.max_files or vanishing * 100 > limits.max_percent * max(live, 1)


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class _Burst(Generic[T]):
    first: float
    last: float
    items: list[T] = field(default_factory=list)


class BurstWindow(Generic[K, T]):
    """Groups what arrives per key (a root) into bursts; `due` hands out the closed ones."""

    def __init__(self, quiet_s: float = BURST_QUIET_S, max_s: float = BURST_MAX_S) -> None:
        self.quiet_s = quiet_s
        self.max_s = max_s
        self._open: dict[K, _Burst[T]] = {}

    def __len__(self) -> int:
        return sum(len(b.items) for b in self._open.values())

    def add(self, key: K, item: T, now: float) -> None:
        burst = self._open.get(key)
        if burst is None:
            burst = self._open[key] = _Burst(now, now)
        burst.last = now
        burst.items.append(item)

    def _closes(self, burst: _Burst[T]) -> float:
        return min(burst.last + self.quiet_s, burst.first + self.max_s)

    def next_deadline(self) -> float | None:
        return min((self._closes(b) for b in self._open.values()), default=None)

    def due(self, now: float) -> list[tuple[K, list[T]]]:
        closed = [key for key, burst in self._open.items() if self._closes(burst) <= now]
        return [(key, self._open.pop(key).items) for key in closed]

    def take_all(self) -> list[tuple[K, list[T]]]:
        out = [(key, burst.items) for key, burst in self._open.items()]
        self._open.clear()
        return out


__all__ = ["BURST_MAX_S", "BURST_QUIET_S", "MASS_MIN_FILES", "BurstWindow", "VanishLimits", "should_hold"]
