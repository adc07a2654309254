"""The search loops of `hash_index.HashIndex`: the C extension `_hamming` where it is built, the same
two functions in numpy where it is not.

Both read one uint64 array, the arena (built by `hash_index._Arena`; word offsets below, which
_hamming.c repeats), and answer alike: the same hits for a query, the same pairs for `groups`.
`collect(arena, query, hits) -> found` writes every live hash within the installed plan's radius
as distance << 56 | slot; `collect_pairs(arena, hits, owners) -> found` every pair of live table
hashes within it, once. Only the first len(hits) are written; the caller retries with room for all.

The C loops probe the multi-index tables (a few dozen short runs per query) and join their runs
for `groups`, without the GIL. numpy cannot probe: at about a microsecond per call, a vectorised
query of 60 runs is no faster than comparing every hash, so the numpy query does exactly that (a
few hundred µs at 100,000 hashes, inside a round trip of a millisecond); its `groups` is the same
join as the C one, vectorised run against run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "COMPILED",
    "DISTANCE_SHIFT",
    "H_BUILT",
    "H_CHUNK",
    "H_CHUNKS",
    "H_CHUNK_WORDS",
    "H_DEAD",
    "H_DEAD_COUNT",
    "H_PLAN",
    "H_SLOT_DELTA",
    "H_TAIL",
    "H_TAIL_COUNT",
    "H_VALUES",
    "NUMPY",
    "P_PROBES",
    "P_RADII",
    "P_RADIUS",
    "P_SCAN",
    "SLOT_MASK",
    "Kernel",
    "kernel",
]

Words = npt.NDArray[np.uint64]

# Arena header: word offsets.
H_CHUNKS = 0  # number of chunks m
H_BUILT = 1  # hashes in the tables (slots 0 .. built-1)
H_SLOT_DELTA = 2  # slot of the table hash at arena[p] is arena[p + delta]
H_TAIL = 3  # first word of the unsorted tail: slots built, built+1, ...
H_TAIL_COUNT = 4  # hashes in the tail
H_DEAD = 5  # first word of the removal bitmap (bit set: slot removed)
H_DEAD_COUNT = 6  # removed slots (0: the bitmap need not be read)
H_PLAN = 7  # first word of the installed plan
H_VALUES = 8  # first word of chunk 0's table; chunk c's follows at H_VALUES + c × built
H_CHUNK = 16  # per chunk c, H_CHUNK_WORDS words at H_CHUNK + 3c: shift, width, first word of its
H_CHUNK_WORDS = 3  # offsets (the absolute word of each chunk value's run, CSR, 2^width + 1 words)

# Plan: word offsets from arena[H_PLAN].
P_RADIUS = 0
P_PROBES = 1  # masks probed in all (0 with P_SCAN set: compare against every hash instead)
P_SCAN = 2
P_RADII = 3  # m words: per-chunk radius (as int64; -1: the chunk is not probed)
# then m + 1 words: chunk c's masks are masks[starts[c]:starts[c + 1]]; then the masks

# A hit: distance << 56 | slot, so sorting hits orders them by (distance, slot).
DISTANCE_SHIFT = 56
SLOT_MASK = (1 << DISTANCE_SHIFT) - 1


class Kernel(NamedTuple):
    name: str
    collect: Callable[[Words, int, Words], int]
    collect_pairs: Callable[[Words, Words, Words], int]


# -- numpy ------------------------------------------------------------------------------------------


class _View(NamedTuple):
    """The arena's parts, as numpy views."""

    chunks: int
    built: int
    radius: int
    scan: bool
    shifts: list[int]
    widths: list[int]
    radii: list[int]
    offsets: list[Words]  # per chunk, run bounds relative to its table
    tables: list[Words]  # per chunk, the hashes sorted by chunk value
    slots: list[Words]  # their slots
    tail: Words
    alive: npt.NDArray[np.bool_]  # per slot (tables and tail)
    masks: list[npt.NDArray[np.int64]]  # per chunk, the probe masks


def _view(arena: Words) -> _View:
    m, built, delta = int(arena[H_CHUNKS]), int(arena[H_BUILT]), int(arena[H_SLOT_DELTA])
    plan, values = int(arena[H_PLAN]), int(arena[H_VALUES])
    tail = arena[int(arena[H_TAIL]) : int(arena[H_TAIL]) + int(arena[H_TAIL_COUNT])]
    total = built + len(tail)
    alive = np.ones(total, np.bool_)
    if arena[H_DEAD_COUNT]:
        every = np.arange(total, dtype=np.uint64)
        bitmap = arena[int(arena[H_DEAD]) + (every >> np.uint64(6)).astype(np.int64)]
        alive = (bitmap >> (every & np.uint64(63))) & np.uint64(1) == 0
    heads = [
        arena[H_CHUNK + H_CHUNK_WORDS * c : H_CHUNK + H_CHUNK_WORDS * (c + 1)].tolist() for c in range(m)
    ]
    starts = arena[plan + P_RADII + m : plan + P_RADII + 2 * m + 1].astype(np.int64)
    first_mask = plan + P_RADII + 2 * m + 1
    masks = arena[first_mask : first_mask + int(arena[plan + P_PROBES])].astype(np.int64)
    tables, slots, offsets = [], [], []
    for c, (_, width, at) in enumerate(heads):
        first = values + c * built
        tables.append(arena[first : first + built])
        slots.append(arena[first + delta : first + delta + built])
        offsets.append(arena[at : at + (1 << width) + 1] - np.uint64(first))
    return _View(
        chunks=m,
        built=built,
        radius=int(arena[plan + P_RADIUS]),
        scan=bool(arena[plan + P_SCAN]),
        shifts=[h[0] for h in heads],
        widths=[h[1] for h in heads],
        radii=arena[plan + P_RADII : plan + P_RADII + m].view(np.int64).tolist(),
        offsets=offsets,
        tables=tables,
        slots=slots,
        tail=tail,
        alive=alive,
        masks=[masks[starts[c] : starts[c + 1]] for c in range(m)],
    )


def _write(found: Words, out: Words, owners: Words | None = None, owned: Words | None = None) -> int:
    room = min(len(found), len(out))
    out[:room] = found[:room]
    if owners is not None and owned is not None:
        owners[:room] = owned[:room]
    return len(found)


def _hits(distances: npt.NDArray[np.uint64], slots: Words) -> Words:
    return (distances.astype(np.uint64) << np.uint64(DISTANCE_SHIFT)) | slots.astype(np.uint64)


def collect_numpy(arena: Words, query: int, hits: Words) -> int:
    """`collect` by comparing every hash: chunk 0's table, then the tail."""
    view = _view(arena)
    value = np.uint64(query)
    everything = np.concatenate([view.tables[0], view.tail])
    slots = np.concatenate(
        [view.slots[0], np.arange(view.built, view.built + len(view.tail), dtype=np.uint64)]
    )
    distances = np.bitwise_count(everything ^ value)
    keep = (distances <= view.radius) & view.alive[slots.astype(np.int64)]
    return _write(_hits(distances[keep], slots[keep]), hits)


# Candidate pairs held at once by the numpy join: a few tens of MB.
_PAIRS_AT_ONCE = 1 << 21


def collect_pairs_numpy(arena: Words, hits: Words, owners: Words) -> int:
    """`collect_pairs` as the C join does it, vectorised: for each chunk and probe mask, every
    hash against the run of its chunk value xor the mask (the runs after its own place, for mask 0;
    each pair of runs once), keeping the pairs within the radius that no earlier chunk finds."""
    view = _view(arena)
    if len(view.tail):
        raise ValueError("bad arena: the tail is not empty (rebuild first)")
    found_hits: list[Words] = []
    found_owners: list[Words] = []
    positions = np.arange(view.built, dtype=np.int64)
    for c in range(view.chunks):
        table, width_mask = view.tables[c], (1 << view.widths[c]) - 1
        own = ((table >> np.uint64(view.shifts[c])) & np.uint64(width_mask)).astype(np.int64)
        offsets = view.offsets[c].astype(np.int64)
        probes = [np.int64(0)] if view.scan else view.masks[c].tolist()
        for mask in probes:
            other = own ^ mask
            if view.scan:
                lo, hi = positions + 1, np.full(view.built, view.built, np.int64)
            elif mask == 0:
                lo, hi = positions + 1, offsets[own + 1]
            else:
                lo, hi = offsets[other], offsets[other + 1]
                hi = np.where(other > own, hi, lo)  # each pair of runs once
            pair_hits, pair_owners = _join(view, c, table, lo, hi)
            found_hits += pair_hits
            found_owners += pair_owners
        if view.scan:
            break
    if not found_hits:
        return 0
    return _write(np.concatenate(found_hits), hits, owners, np.concatenate(found_owners))


def _join(
    view: _View, c: int, table: Words, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]
) -> tuple[list[Words], list[Words]]:
    """Hash i of chunk c's table against hashes lo[i]:hi[i] of it, a block of hashes at a time."""
    counts = np.maximum(hi - lo, 0)
    ends = np.cumsum(counts)
    out_hits: list[Words] = []
    out_owners: list[Words] = []
    start = 0
    while start < len(counts):
        # As many hashes as keep the block's candidate pairs near _PAIRS_AT_ONCE (one at least).
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _PAIRS_AT_ONCE, side="right")))
        block = counts[start:stop]
        total = int(block.sum())
        if total:
            first = np.repeat(np.arange(start, stop, dtype=np.int64), block)
            within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(block) - block, block)
            second = lo[first] + within
            difference = table[first] ^ table[second]
            distances = np.bitwise_count(difference)
            keep = distances <= view.radius
            for e in range(c):  # found from an earlier chunk already
                if view.radii[e] >= 0:
                    part = (difference >> np.uint64(view.shifts[e])) & np.uint64((1 << view.widths[e]) - 1)
                    keep &= np.bitwise_count(part) > view.radii[e]
            owner, partner = view.slots[c][first[keep]], view.slots[c][second[keep]]
            live = view.alive[owner.astype(np.int64)] & view.alive[partner.astype(np.int64)]
            out_hits.append(_hits(distances[keep][live], partner[live]))
            out_owners.append(owner[live])
        start = stop
    return out_hits, out_owners


NUMPY = Kernel("numpy", collect_numpy, collect_pairs_numpy)

COMPILED: Kernel | None
try:
    from importd.media import _hamming
except ImportError:  # pragma: no cover - built by `pip install`, optional
    COMPILED = None
else:
    COMPILED = Kernel("c", _hamming.collect, _hamming.collect_pairs)

# What HashIndex calls (tests swap it to run both on the same data).
kernel: Kernel = COMPILED or NUMPY
