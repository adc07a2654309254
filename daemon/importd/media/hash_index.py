"""Near-duplicate search over 64-bit perceptual hashes (images' pHashes) by Hamming distance.

`HashIndex` is multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space
with multi-index hashing", 2014): the 64 bits are cut into m chunks; if two hashes differ in at most
r bits, then (pigeonhole) they differ in at most r_c bits on some chunk c, for any r_c whose r_c + 1
add up to r + 1 (r_c = -1 leaves a chunk out). Each chunk has a table from chunk value to hashes, so
a query compares only the hashes whose chunk value is within r_c of its own. The search is exact,
never approximate. Chunk widths and radii come from a cost model (table probes against hashes
compared): at 100,000 hashes and r = 10, five 11-bit chunks probed at radius 1 and one 9-bit chunk
at radius 0, 61 probes and about 3,100 hashes compared; wide radii compare every hash instead.

The tables are flat (CSR: hashes sorted by chunk value, plus offsets), in one uint64 array with
everything else a search reads (the arena, laid out as hamming_kernel.py describes), searched by
hamming_kernel's `collect` and `collect_pairs` (C where built, numpy otherwise; no other module
calls them). Recent additions sit in an unsorted tail, compared one by one until the next rebuild;
removals are marked in a bitmap until then. `groups` folds both into the tables first (a rebuild)
and joins the tables with themselves instead of querying every hash.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from functools import lru_cache
from math import comb
from typing import Any, Generic, cast

import numpy as np
import numpy.typing as npt

from importd.media import hamming_kernel
from importd.media.near_groups import K, NearGroup, components

# Default pHash threshold: two images whose pHashes differ in at most this many of 64 bits are near-
# duplicates. Calibrated with bench/media.py:calibrate_phash on the 586 images of the Pillow test corpus
# that decode, are at least 64 px and not blank; 189 of them are photo-like (≥ 1,500 colours at 64×64),
# the rest drawings and test patterns. pHash distances are always even (32 of the 64 bits are set).
#   copy of an image             photo-like: p50  p95  p99  max  ≤10    all 586: p99  ≤10
#   resized to 1/2                            0    2    2    2  100 %           12  99 %
#   resized to 1/4                            0    2    4    4  100 %           14  98 %
#   re-encoded JPEG q75                       0    4    4    6  100 %           16  97 %
#   re-encoded JPEG q40                       0    4    4    6  100 %           22  97 %
#   1/2 size + JPEG q60                       2    4    4    4  100 %           24  96 %
#   cropped 2 % each side                     6   10   10   12   99 %           16  95 %
#   cropped 5 % each side                    10   14   16   20   69 %           30  64 %
#   cropped 10 % each side                   22   27   32   32    1 %           40  13 %
#   different pictures (16×16 thumbnails uncorrelated and far apart): 15,136 photo-like pairs,
#   minimum 16, 0.1 % ≤ 18, none ≤ 10; of all 155,381 pairs 142 (0.09 %) are ≤ 10, all flat drawings
#   (gradients, shapes on white, colour charts).
# 10 keeps every resize and re-encode of a photograph and nearly every slight crop, 6 bits below the
# closest pair of different photographs. It is also imagededup's default. pHash does not survive
# heavier crops (10 %); those copies are not found.
NEAR_DUPLICATE_MAX_DISTANCE = 10

_MASK64 = (1 << 64) - 1
_SLOT_MASK = hamming_kernel.SLOT_MASK
_DISTANCE_SHIFT = hamming_kernel.DISTANCE_SHIFT


class HashIndex(Generic[K]):
    """Exact Hamming-radius search over 64-bit hashes (signed or unsigned ints), keyed by `K`.

    Not thread-safe: one thread at a time, though a search releases the GIL while it runs.
    """

    def __init__(self, *, chunks: int | None = None, min_rebuild: int = 4096) -> None:
        if chunks is not None and not 4 <= chunks <= 16:
            # Fewer than 4 chunks means tables of 2^22 entries or more per chunk.
            raise ValueError("chunks must be between 4 and 16")
        self._fixed_chunks = chunks
        self._min_rebuild = min_rebuild
        self._slot_of: dict[K, int] = {}
        self._keys: list[K | None] = []
        self._values = np.zeros(1024, dtype=np.uint64)
        self._alive = np.zeros(1024, dtype=np.bool_)
        self._count = 0  # slots in use, dead ones included
        self._dead = 0
        self._arena = _Arena.build(self._values[:0], _layout(0, chunks), min_rebuild)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def add(self, key: K, value: int) -> None:
        """Index `value` under `key`, replacing the key's previous hash."""
        slot = self._store(key, value)
        if not self._arena.append(slot, self._values[slot]):
            self._rebuild()

    def add_many(self, items: Iterable[tuple[K, int]]) -> None:
        """Bulk load, with one rebuild at the end."""
        try:
            for key, value in items:
                self._store(key, value)
        finally:
            self._rebuild()

    def remove(self, key: K) -> bool:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return False
        self._alive[slot] = False
        self._keys[slot] = None
        self._dead += 1
        self._arena.mark_removed(slot)
        if self._dead > max(self._min_rebuild, self._count // 4):
            self._rebuild()
        return True

    def query(self, value: int, max_distance: int) -> list[tuple[K, int]]:
        """Every key whose hash is within `max_distance` bits of `value`, nearest first (then by
        insertion order). A hash wider than 64 bits counts by its low 64."""
        hits = self._arena.search(int(value) & _MASK64, max_distance)
        keys: list[Any] = self._keys  # live slots always hold a key
        return [(keys[hit & _SLOT_MASK], hit >> _DISTANCE_SHIFT) for hit in hits]

    def groups(self, max_distance: int) -> list[NearGroup[K]]:
        """All groups of two or more keys linked by distances ≤ `max_distance`, largest first."""
        if self._dead or self._count > self._arena.built:
            self._rebuild()  # the join reads the tables only
        if self._count < 2:
            return []
        source, target = self._arena.pairs(max_distance)
        if len(source) == 0:
            return []
        degree_array, members_by_label = components(source, target, self._count)
        # Plain lists: numpy indexing one element at a time made this loop the slowest part.
        degree = degree_array.tolist()
        values = self._values[: self._count].tolist()
        keys: list[Any] = self._keys  # live slots always hold a key
        result = []
        for slots_in_group in members_by_label:
            anchor = max(slots_in_group, key=lambda s: (degree[s], -s))
            anchor_value = values[anchor]
            members = sorted((s != anchor, (values[s] ^ anchor_value).bit_count(), s) for s in slots_in_group)
            result.append(
                NearGroup(anchor=keys[anchor], members=tuple((keys[s], float(d)) for _, d, s in members))
            )
        result.sort(key=lambda g: -len(g.members))
        return result

    # -- internals -------------------------------------------------------------------------------

    def _store(self, key: K, value: int) -> int:
        if key in self._slot_of:
            self.remove(key)
        if self._count == len(self._values):
            self._values = np.concatenate([self._values, np.zeros_like(self._values)])
            self._alive = np.concatenate([self._alive, np.zeros_like(self._alive)])
        slot = self._count
        self._values[slot] = value & _MASK64
        self._alive[slot] = True
        self._keys.append(key)
        self._slot_of[key] = slot
        self._count += 1
        return slot

    def _rebuild(self) -> None:
        if self._dead:
            live = np.flatnonzero(self._alive[: self._count])
            keys = [self._keys[s] for s in live.tolist()]
            capacity = max(1024, 2 * len(live))
            values = np.zeros(capacity, dtype=np.uint64)
            values[: len(live)] = self._values[live]
            self._values = values
            self._alive = np.zeros(capacity, dtype=np.bool_)
            self._alive[: len(live)] = True
            self._keys = keys
            self._slot_of = {cast(K, k): i for i, k in enumerate(keys)}
            self._count = len(live)
            self._dead = 0
        values = self._values[: self._count]
        tail = max(self._min_rebuild, self._count // 8)
        self._arena = _Arena.build(values, _layout(self._count, self._fixed_chunks), tail)


class _Arena:
    """The search structure in one uint64 array (word offsets in hamming_kernel.py):

    header | plan | per chunk: offsets (absolute word index of each chunk value's run, CSR) | per
    chunk: the hashes sorted by chunk value | their slots, in the same order | the tail: hashes
    added since the build, unsorted | removal bitmap.
    """

    def __init__(
        self, words: npt.NDArray[np.uint64], layout: tuple[int, ...], built: int, tail_capacity: int
    ) -> None:
        self.words = words
        self.layout = layout
        self.built = built
        self.tail_capacity = tail_capacity
        self.probe_capacity = max(256, built // 8)
        self._installed: int | None = None
        self._room = np.empty(64, np.uint64)  # hits of a query; grows to the largest answer

    @classmethod
    def build(cls, values: npt.NDArray[np.uint64], layout: tuple[int, ...], tail_capacity: int) -> _Arena:
        hk = hamming_kernel
        n, m = len(values), len(layout)
        shifts = np.concatenate([[0], np.cumsum(layout)[:-1]]).astype(np.int64)
        probe_capacity = max(256, n // 8)
        plan_at = hk.H_CHUNK + hk.H_CHUNK_WORDS * 16
        offsets_at = plan_at + hk.P_RADII + 2 * m + 1 + probe_capacity
        values_at = offsets_at + sum((1 << w) + 1 for w in layout)
        slots_at = values_at + m * n
        tail_at = slots_at + m * n
        dead_at = tail_at + tail_capacity
        words = np.zeros(dead_at + (n + tail_capacity + 63) // 64, np.uint64)
        words[: hk.H_VALUES + 1] = [m, n, slots_at - values_at, tail_at, 0, dead_at, 0, plan_at, values_at]
        at = offsets_at
        for c, (shift, width) in enumerate(zip(shifts.tolist(), layout, strict=True)):
            chunk_values = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            order = np.argsort(chunk_values, kind="stable")
            run_starts = np.searchsorted(chunk_values[order], np.arange((1 << width) + 1))
            first = values_at + c * n
            head = hk.H_CHUNK + hk.H_CHUNK_WORDS * c
            words[head : head + hk.H_CHUNK_WORDS] = [shift, width, at]
            words[at : at + (1 << width) + 1] = run_starts + first
            words[first : first + n] = values[order]
            words[first + slots_at - values_at : first + slots_at - values_at + n] = order
            at += (1 << width) + 1
        return cls(words, layout, n, tail_capacity)

    def search(self, value: int, radius: int) -> list[int]:
        """The hits (distance << 56 | slot) of every live hash within `radius` of `value`, in order."""
        self._install(radius)
        collect = hamming_kernel.kernel.collect
        found = collect(self.words, value, self._room)
        if found > len(self._room):
            self._room = np.empty(found, np.uint64)
            found = collect(self.words, value, self._room)
        hits: list[int] = np.sort(self._room[:found]).tolist()
        return hits

    def pairs(self, radius: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every pair of live table hashes within `radius`, once, as two arrays of slots."""
        self._install(radius)
        collect_pairs = hamming_kernel.kernel.collect_pairs
        size = 2 * self.built + 1024
        while True:
            hits, owners = np.empty(size, np.uint64), np.empty(size, np.uint64)
            found = collect_pairs(self.words, hits, owners)
            if found <= size:
                break
            size = found
        source = owners[:found].astype(np.int64)
        target = (hits[:found] & np.uint64(_SLOT_MASK)).astype(np.int64)
        return source, target

    def append(self, slot: int, value: np.uint64) -> bool:
        """Put a new hash in the tail; False when it is full (time to rebuild)."""
        hk = hamming_kernel
        count = int(self.words[hk.H_TAIL_COUNT])
        if count == self.tail_capacity or slot != self.built + count:
            return False
        self.words[int(self.words[hk.H_TAIL]) + count] = value
        self.words[hk.H_TAIL_COUNT] = count + 1
        return True

    def mark_removed(self, slot: int) -> None:
        hk = hamming_kernel
        if slot < self.built + int(self.words[hk.H_TAIL_COUNT]):
            at = int(self.words[hk.H_DEAD]) + slot // 64
            self.words[at] |= np.uint64(1 << (slot % 64))
            self.words[hk.H_DEAD_COUNT] += np.uint64(1)

    def _install(self, radius: int) -> None:
        if radius == self._installed:
            return
        plan = _plan(self.layout, self.built, max(0, min(64, int(radius))), self.probe_capacity)
        at = int(self.words[hamming_kernel.H_PLAN])
        self.words[at : at + len(plan)] = plan
        self._installed = radius


# Cost model for choosing chunk widths and per-chunk radii, in units of one hash compared inside a
# table run (vectorised: about 0.25 ns). A probe costs a table lookup, a cache miss or two and a
# mispredicted loop exit.
_PROBE_COST = 40.0


def _layout(n: int, chunks: int | None) -> tuple[int, ...]:
    """Chunk widths (summing to 64) for `n` hashes: the cheapest for the default radius."""
    if chunks is not None:
        return tuple(64 // chunks + (1 if c < 64 % chunks else 0) for c in range(chunks))
    candidates = []
    for m in range(4, 9):
        candidates.append(tuple(64 // m + (1 if c < 64 % m else 0) for c in range(m)))
        for width in range(-(-64 // m), 17):
            narrow = 64 - width * (m - 1)
            if 1 <= narrow <= width:
                candidates.append((width,) * (m - 1) + (narrow,))
    return min(candidates, key=lambda layout: _probing(layout, n, NEAR_DUPLICATE_MAX_DISTANCE)[0])


def _probing(layout: tuple[int, ...], n: int, radius: int) -> tuple[float, list[int]]:
    """The cheapest per-chunk radii r_c for `radius` and their cost. Pigeonhole: two hashes within
    `radius` bits agree to within r_c bits on some chunk c when sum(r_c + 1) = radius + 1, so probing
    every chunk value within r_c of the query's finds every match. r_c = -1 leaves a chunk out."""
    # best[b]: (cost, radii) for the chunks so far using b of the radius + 1 budget
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for width in layout:
        step: dict[int, tuple[float, list[int]]] = {}
        for used, (cost, radii) in best.items():
            for r in range(-1, min(width, radius - used) + 1):
                probes = _ball(width, r)
                total = cost + probes * (_PROBE_COST + n / (1 << width))
                if used + r + 1 not in step or total < step[used + r + 1][0]:
                    step[used + r + 1] = (total, [*radii, r])
        best = step
    return best.get(radius + 1, (float("inf"), []))


def _plan(layout: tuple[int, ...], n: int, radius: int, probe_capacity: int) -> npt.NDArray[np.uint64]:
    """Plan words (hamming_kernel.P_*) for `radius`: the chunk values to probe, or a full scan when
    that is cheaper (a scan compares n hashes, streaming)."""
    cost, radii = _probing(layout, n, radius)
    probes = sum(_ball(w, r) for w, r in zip(layout, radii, strict=True)) if radii else 0
    m = len(layout)
    if not radii or cost >= n or probes > probe_capacity:
        plan = np.zeros(hamming_kernel.P_RADII + 2 * m + 1, np.int64)
        plan[hamming_kernel.P_SCAN] = 1
        plan[hamming_kernel.P_RADII : hamming_kernel.P_RADII + m] = -1
    else:
        masks = [_masks(w, r) for w, r in zip(layout, radii, strict=True)]
        starts = np.concatenate([[0], np.cumsum([len(x) for x in masks])])
        plan = np.concatenate([[0, probes, 0], radii, starts, np.concatenate(masks)]).astype(np.int64)
    plan[hamming_kernel.P_RADIUS] = radius
    return plan.view(np.uint64)


@lru_cache(maxsize=256)
def _ball(width: int, radius: int) -> int:
    """How many `width`-bit values are within `radius` bits of a given one."""
    return sum(comb(width, i) for i in range(radius + 1))


@lru_cache(maxsize=64)
def _masks(width: int, radius: int) -> npt.NDArray[np.int64]:
    """Every `width`-bit mask with at most `radius` bits set (none when radius < 0)."""
    if radius < 0:
        return np.zeros(0, dtype=np.int64)
    masks = [0]
    for r in range(1, min(radius, width) + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r)]
    return np.array(masks, dtype=np.int64)
