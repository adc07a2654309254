"""Near-duplicate search: 64-bit perceptual hashes by Hamming distance, face embeddings by cosine.

`HashIndex` is multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space
with multi-index hashing", 2014): the 64 bits are cut into m chunks; if two hashes differ in at most
r bits, then (pigeonhole) some chunk c differs in at most r_c bits, where the r_c add up to r - m + 1.
Each chunk has a table from chunk value to items, so a query only looks at the items sharing a
chunk value within r_c of its own, then checks their full distance. The search is exact, never
approximate. Tables are flat numpy arrays (CSR: items sorted by chunk value, plus offsets) walked by
a numba-compiled loop (hamming_kernel.py); recent additions sit in a small unsorted tail scanned
directly until the next rebuild; removals are tombstones until then.

`video_groups` links videos by fingerprint distance among those of compatible duration.

`EmbeddingIndex` is a flat float32 matrix: one matrix-vector product answers "which faces are this
person". At a studio's scale (tens of thousands of faces) that is a few milliseconds per query, and
exact; an approximate index (HNSW) would only pay off well beyond a million faces.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_array  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

from importd.media.video import (
    VIDEO_NEAR_MAX_DISTANCE,
    VideoFingerprint,
    durations_compatible,
    fingerprint_distance,
)

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

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class NearGroup(Generic[K]):
    """A connected group of near-duplicates.

    `anchor` is the member with the most near neighbours; `members` pairs every member (anchor
    included, first) with its distance to the anchor. Groups are connected components, so a member
    may be further than the threshold from the anchor when it joins through another member.
    """

    anchor: K
    members: tuple[tuple[K, float], ...]


class HashIndex(Generic[K]):
    """Exact Hamming-radius search over 64-bit hashes (signed or unsigned ints), keyed by `K`.

    Not thread-safe; searches release the GIL, so `groups` can run in a worker thread.
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
        self._tables = _Tables.build(self._values[:0], 4)
        self._out = _Hits.allocate(1024)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def add(self, key: K, value: int) -> None:
        """Index `value` under `key`, replacing the key's previous hash."""
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
        self._maybe_rebuild()

    def add_many(self, items: Iterable[tuple[K, int]]) -> None:
        """Bulk load, with one rebuild at the end."""
        saved, self._min_rebuild = self._min_rebuild, 1 << 62
        try:
            for key, value in items:
                self.add(key, value)
        finally:
            self._min_rebuild = saved
        self._rebuild()

    def remove(self, key: K) -> bool:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return False
        self._alive[slot] = False
        self._keys[slot] = None
        self._dead += 1
        self._maybe_rebuild()
        return True

    def query(self, value: int, max_distance: int) -> list[tuple[K, int]]:
        """Every key whose hash is within `max_distance` bits of `value`, nearest first."""
        found = self._run(np.array([value & _MASK64], dtype=np.uint64), max_distance)
        if found == 0:
            return []
        hits = zip(self._out.distance[:found].tolist(), self._out.slot[:found].tolist(), strict=True)
        return [(self._key(s), d) for d, s in sorted(hits)]

    def groups(self, max_distance: int) -> list[NearGroup[K]]:
        """All groups of two or more keys linked by distances ≤ `max_distance`, largest first."""
        live = np.flatnonzero(self._alive[: self._count])
        if len(live) < 2:
            return []
        sources, targets = [], []
        for start in range(0, len(live), 8192):
            queries = live[start : start + 8192]
            found = self._run(self._values[queries], max_distance)
            origin, slots = queries[self._out.owner[:found]], self._out.slot[:found].copy()
            keep = slots > origin  # each pair once, no self-pairs
            sources.append(origin[keep])
            targets.append(slots[keep])
        source, target = np.concatenate(sources), np.concatenate(targets)
        if len(source) == 0:
            return []
        degree, members_by_label = _components(source, target, self._count)
        result = []
        for slots_in_group in members_by_label:
            anchor = max(slots_in_group, key=lambda s: (degree[s], -s))
            anchor_value = int(self._values[anchor])
            members = sorted(
                (s != anchor, (int(self._values[s]) ^ anchor_value).bit_count(), s) for s in slots_in_group
            )
            result.append(
                NearGroup(
                    anchor=self._key(anchor),
                    members=tuple((self._key(s), float(d)) for _, d, s in members),
                )
            )
        result.sort(key=lambda g: -len(g.members))
        return result

    # -- internals -------------------------------------------------------------------------------

    def _key(self, slot: int) -> K:
        return cast(K, self._keys[slot])  # live slots always hold a key; dead ones are None

    def _maybe_rebuild(self) -> None:
        tail = self._count - self._tables.built
        if tail > max(self._min_rebuild, self._tables.built // 8) or (
            self._dead > max(self._min_rebuild, self._count // 4)
        ):
            self._rebuild()

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
        chunks = self._fixed_chunks or _chunk_count(self._count)
        self._tables = _Tables.build(self._values[: self._count], chunks)

    def _run(self, queries: npt.NDArray[np.uint64], radius: int) -> int:
        """Search; the hits (query index, slot, distance) are the first N rows of `self._out`."""
        tables = self._tables
        plan = tables.plan(max(0, min(64, radius)))
        # No probing plan: the radius is so wide that scanning everything is cheaper.
        tail_start = tables.built if plan.probes else 0
        search = _kernel()
        while True:
            out = self._out
            found: int = search(
                queries,
                plan.radius,
                tables.shifts,
                tables.widths,
                tables.bases,
                plan.radii,
                plan.masks,
                plan.starts,
                tables.offsets,
                tables.sorted_values,
                tables.sorted_slots,
                self._values[tail_start : self._count],
                np.int64(tail_start),
                self._alive,
                out.owner,
                out.slot,
                out.distance,
            )
            if found <= len(out.slot):
                return found
            self._out = _Hits.allocate(2 * found)


@dataclass(frozen=True, slots=True)
class _Hits:
    owner: npt.NDArray[np.int64]
    slot: npt.NDArray[np.int64]
    distance: npt.NDArray[np.int64]

    @classmethod
    def allocate(cls, size: int) -> _Hits:
        return cls(np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int64))


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-chunk search radii (-1: skip the chunk) and the chunk-value masks to probe for each.

    A plan without probes scans every hash instead.
    """

    radius: np.uint64
    radii: npt.NDArray[np.int64]
    masks: npt.NDArray[np.uint64]
    starts: npt.NDArray[np.int64]

    @property
    def probes(self) -> int:
        return len(self.masks)

    @classmethod
    def scan_only(cls, radius: int, chunks: int) -> _Plan:
        skip = np.full(chunks, -1, np.int64)
        return cls(np.uint64(radius), skip, np.zeros(0, np.uint64), np.zeros(chunks + 1, np.int64))


@dataclass(frozen=True, slots=True)
class _Tables:
    """Per chunk: slots sorted by chunk value, their hashes, and where each value's run starts (CSR)."""

    built: int
    widths: npt.NDArray[np.int64]
    shifts: npt.NDArray[np.int64]
    bases: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    sorted_slots: npt.NDArray[np.int64]
    sorted_values: npt.NDArray[np.uint64]
    plans: dict[int, _Plan]

    @classmethod
    def build(cls, values: npt.NDArray[np.uint64], chunks: int) -> _Tables:
        n = len(values)
        widths = np.array([64 // chunks + (1 if c < 64 % chunks else 0) for c in range(chunks)], np.int64)
        shifts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        bases = np.concatenate([[0], np.cumsum(np.left_shift(1, widths))[:-1]]).astype(np.int64)
        keys = np.concatenate(
            [
                ((values >> np.uint64(s)) & np.uint64((1 << int(w)) - 1)).astype(np.int64) + b
                for s, w, b in zip(shifts, widths, bases, strict=True)
            ]
        )
        order = np.argsort(keys, kind="stable")
        total = int(bases[-1]) + (1 << int(widths[-1]))
        offsets = np.searchsorted(keys[order], np.arange(total + 1)).astype(np.int64)
        sorted_slots = np.tile(np.arange(n, dtype=np.int64), chunks)[order]
        return cls(n, widths, shifts, bases, offsets, sorted_slots, values[sorted_slots], {})

    def plan(self, radius: int) -> _Plan:
        """How to search for `radius` (cached per radius)."""
        if radius not in self.plans:
            radii = _radii(len(self.widths), radius)
            masks = [_masks(int(w), r) for w, r in zip(self.widths, radii, strict=True)]
            probes = sum(len(m) for m in masks)
            expected = probes * self.built / float(1 << int(self.widths.min()))
            # Probing touches a random run per mask; a scan streams. Past ~1/8 of the data, scan.
            if self.built == 0 or probes + expected > self.built / 8:
                self.plans[radius] = _Plan.scan_only(radius, len(self.widths))
            else:
                starts = np.concatenate([[0], np.cumsum([len(m) for m in masks])]).astype(np.int64)
                self.plans[radius] = _Plan(
                    np.uint64(radius),
                    np.array(radii, np.int64),
                    np.concatenate(masks).astype(np.uint64),
                    starts,
                )
        return self.plans[radius]


def _chunk_count(n: int) -> int:
    # Norouzi et al. suggest about 64 / log2(n) chunks (one item per chunk value). Two more measured
    # faster at 100,000 hashes and radius 10 (6 chunks: 14 µs a query, 4 chunks: 18 µs): probing a
    # table is a cache miss, while scanning the longer runs it leads to is sequential.
    return int(min(8, max(4, round(64 / np.log2(max(n, 4))) + 2)))


def _radii(chunks: int, radius: int) -> list[int]:
    """Per-chunk radii r_c with sum(r_c + 1) = radius + 1: two hashes within `radius` must agree to
    within r_c bits on some chunk c (pigeonhole), so probing those balls finds every match."""
    base, extra = divmod(radius, chunks)
    return [base if c <= extra else base - 1 for c in range(chunks)]


@lru_cache(maxsize=64)
def _masks(width: int, radius: int) -> npt.NDArray[np.uint64]:
    """Every `width`-bit mask with at most `radius` bits set (none when radius < 0)."""
    if radius < 0:
        return np.zeros(0, dtype=np.uint64)
    masks = [0]
    for r in range(1, min(radius, width) + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r)]
    return np.array(masks, dtype=np.uint64)


def _components(
    source: npt.NDArray[np.int64], target: npt.NDArray[np.int64], size: int
) -> tuple[npt.NDArray[np.int64], list[list[int]]]:
    graph = coo_array((np.ones(len(source), dtype=np.int8), (source, target)), shape=(size, size))
    _, label = connected_components(graph, directed=False)
    degree = np.bincount(np.concatenate([source, target]), minlength=size)
    groups: dict[int, list[int]] = {}
    for slot in np.unique(np.concatenate([source, target])).tolist():
        groups.setdefault(int(label[slot]), []).append(slot)
    return degree, list(groups.values())


_compiled: list[Any] = []


def compile_search() -> None:
    """Compile the search loop now (about a second of CPU) rather than on the first query; the
    daemon calls this in a worker thread at start-up so the event loop never waits for numba."""
    HashIndex[int]().query(0, 0)


def _kernel() -> Any:
    # Imported on first search, when numba compiles the loop (about a second, once per process).
    if not _compiled:
        from importd.media.hamming_kernel import search

        _compiled.append(search)
    return _compiled[0]


def video_groups(
    fingerprints: Iterable[tuple[K, VideoFingerprint]], max_distance: float = VIDEO_NEAR_MAX_DISTANCE
) -> list[NearGroup[K]]:
    """Groups of near-duplicate videos: fingerprint distance ≤ `max_distance` within the duration
    tolerance. Members carry their distance to the anchor, or, when a member joined through a chain
    and cannot be compared with the anchor directly, its closest link.

    Videos are sorted by duration and each is compared only with those whose duration is compatible,
    so the work is proportional to videos × videos-of-about-the-same-length, not all pairs. A
    studio's catalog holds thousands of videos, not millions; no further index is needed.
    """
    items = sorted(fingerprints, key=lambda item: item[1].duration_s)
    if len(items) < 2:
        return []
    sources, targets = [], []
    linked: dict[int, float] = {}  # each video's closest link
    for i, (_, a) in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j][1]
            if not durations_compatible(a.duration_s, b.duration_s):
                break  # sorted by duration: every later one is longer still
            distance = fingerprint_distance(a, b)
            if distance is not None and distance <= max_distance:
                sources.append(i)
                targets.append(j)
                linked[i] = min(distance, linked.get(i, distance))
                linked[j] = min(distance, linked.get(j, distance))
    if not sources:
        return []
    degree, members_by_label = _components(
        np.array(sources, np.int64), np.array(targets, np.int64), len(items)
    )
    result = []
    for slots in members_by_label:
        anchor = max(slots, key=lambda s: (degree[s], -s))
        members = []
        for s in slots:
            distance = 0.0 if s == anchor else fingerprint_distance(items[anchor][1], items[s][1])
            members.append((s != anchor, linked[s] if distance is None else distance, s))
        members.sort()
        result.append(NearGroup(items[anchor][0], tuple((items[s][0], d) for _, d, s in members)))
    result.sort(key=lambda g: -len(g.members))
    return result


class EmbeddingIndex(Generic[K]):
    """Cosine-similarity search over unit-length embeddings, keyed by `K` (e.g. a face row id)."""

    def __init__(self, dimensions: int = 512) -> None:
        self.dimensions = dimensions
        self._slot_of: dict[K, int] = {}
        self._keys: list[K] = []
        self._matrix = np.zeros((256, dimensions), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K, embedding: npt.NDArray[np.float32]) -> None:
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape != (self.dimensions,):
            raise ValueError(f"expected {self.dimensions} dimensions, got {vector.shape[0]}")
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("embedding has no direction")
        vector = vector / norm
        slot = self._slot_of.get(key)
        if slot is None:
            slot = len(self._keys)
            if slot == len(self._matrix):
                self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
            self._keys.append(key)
            self._slot_of[key] = slot
        self._matrix[slot] = vector

    def remove(self, key: K) -> bool:
        """Drop `key`; the last row moves into its place so the matrix stays dense."""
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return False
        last = len(self._keys) - 1
        if slot != last:
            moved = self._keys[last]
            self._keys[slot] = moved
            self._matrix[slot] = self._matrix[last]
            self._slot_of[moved] = slot
        self._keys.pop()
        return True

    def query(self, embedding: npt.NDArray[np.float32], min_similarity: float) -> list[tuple[K, float]]:
        """Keys whose embedding has cosine similarity ≥ `min_similarity`, most similar first."""
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        scores = self._matrix[: len(self._keys)] @ vector
        hit = np.flatnonzero(scores >= min_similarity)
        order = hit[np.argsort(-scores[hit], kind="stable")]
        return [(self._keys[i], float(scores[i])) for i in order.tolist()]

    def groups(self, min_similarity: float, *, block: int = 2048) -> list[NearGroup[K]]:
        """Groups of two or more embeddings linked by similarity ≥ `min_similarity` (same person).

        Members carry their similarity to the anchor (the member with the most links).
        """
        n = len(self._keys)
        if n < 2:
            return []
        matrix = self._matrix[:n]
        sources, targets = [], []
        for start in range(0, n, block):
            scores = matrix[start : start + block] @ matrix.T
            rows, cols = np.nonzero(scores >= min_similarity)
            rows = rows + start
            keep = cols > rows
            sources.append(rows[keep])
            targets.append(cols[keep])
        source, target = np.concatenate(sources), np.concatenate(targets)
        if len(source) == 0:
            return []
        degree, members_by_label = _components(source, target, n)
        result = []
        for slots in members_by_label:
            anchor = max(slots, key=lambda s: (degree[s], -s))
            similarity = matrix[slots] @ matrix[anchor]
            members = sorted(
                zip(similarity.tolist(), slots, strict=True), key=lambda m: (m[1] != anchor, -m[0])
            )
            result.append(NearGroup(self._keys[anchor], tuple((self._keys[s], float(v)) for v, s in members)))
        result.sort(key=lambda g: -len(g.members))
        return result
