"""The compiled search of `hash_index.HashIndex`: probe multi-index tables, check full distances.

numpy alone cannot do this: one query is a few dozen short table runs, and at about a microsecond per
numpy call a vectorised query is no faster than scanning every hash. numba compiles the loops once
(seconds; the result is cached on disk when there is somewhere to write it) and releases the GIL
while they run.

Everything a search reads lives in one uint64 array, the arena (word offsets below; built by
`hash_index._Arena`). A single query passes the arena as its address and length, plain ints, and calls
the compiled overload directly: an array argument makes numba allocate a reference record per call,
and the dispatcher types every argument, together about 1 µs of a 2 µs call when the caches are
cold. The caller holds the array for the duration of the call.

At 100,000 hashes a query compares about 3,100 of them in 61 table runs, some 430 cache lines at
scattered places, and when it follows other work (in the benchmark, a numpy scan of all the hashes,
which streams 2 MB through the caches) those lines come from memory, not cache: on the 2-core VM
measured, 150 ns for a line alone, and a cold query spends about 80 % of its time in the runs. So
the search runs in three passes: prefetch where every probe's run bounds are; read the bounds; then
count the matches run by run while prefetching the runs ahead, so that many misses are in flight at
once. A radius-1 probe of an 11-bit chunk reads the bounds of 12 chunk values; in the offsets table
they are 9 lines apart, in the chunk's neighbour block (built where it is small) 2 lines, which
takes some 40 scattered misses off a query. The offsets table serves the other radii.

Results go back to Python as slot << 7 | distance, one-digit Python ints, one or two of them as a
tuple: 95 % of queries have at most two hits, and arithmetic on large ints, an array read back or a
list built by a comprehension each cost a few hundred ns when the interpreter's caches are cold.

The interface (`__all__`), used by `hash_index` alone: the arena's layout (H_*, P_*, REPORTED,
`neighbour_stride`), the hit encoding (DISTANCE_SHIFT, SLOT_MASK, RESULT_DISTANCE_BITS) and three
entry points: `compiled_search()` (one query), `collect` (a query with more hits than the result area
holds) and `collect_pairs` (every pair within the radius). Everything else here is numba's business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "DISTANCE_SHIFT",
    "H_BUILT",
    "H_CHUNK",
    "H_CHUNKS",
    "H_DEAD",
    "H_DEAD_COUNT",
    "H_FIRST_FOUND",
    "H_OUT",
    "H_OUT_CAP",
    "H_PLAN",
    "H_SCAN_FROM",
    "H_SCRATCH",
    "H_SLOT_DELTA",
    "H_TAIL",
    "H_TAIL_COUNT",
    "P_PROBES",
    "P_RADII",
    "P_RADIUS",
    "P_SCAN",
    "REPORTED",
    "RESULT_DISTANCE_BITS",
    "SLOT_MASK",
    "collect",
    "collect_pairs",
    "compiled_search",
    "neighbour_stride",
]


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """numba.njit, releasing the GIL, with the compiled code cached on disk (next to this file, or
    in the user's cache directory) when there is somewhere writable: compiling takes seconds."""

    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return numba.njit(nogil=True, cache=True, **options)(function)
        except RuntimeError:  # numba found no writable cache location
            return numba.njit(nogil=True, **options)(function)

    return decorate


def _intrinsic(function: Callable[..., Any]) -> Any:
    return intrinsic(function)


# Arena header: word offsets.
H_CHUNKS = 0  # number of chunks m
H_BUILT = 1  # hashes in the tables (slots 0 .. built-1)
H_SLOT_DELTA = 2  # slot of the hash at arena[p] is arena[p + delta] (table values only)
H_TAIL = 3  # first word of the unsorted tail: slots built, built+1, ...
H_TAIL_COUNT = 4  # hashes in the tail
H_DEAD = 5  # first word of the removal bitmap (bit set: slot removed)
H_DEAD_COUNT = 6  # removed slots (0: the bitmap need not be read)
H_PLAN = 7  # first word of the installed plan
H_SCRATCH = 8  # first word of 2 × (plan capacity) scratch words
H_OUT = 9  # first word of the result area of `search`
H_OUT_CAP = 10  # its size
H_SCAN_FROM = 11  # first value word of a full scan (chunk 0's table)
H_FIRST_FOUND = 12  # scratch: the hit count when the current probing began
H_CHUNK = 16  # per chunk c, 4 words at H_CHUNK + 4c: shift, width, first word of its offsets, and
# the first half (32-bit index) of its neighbour blocks, 0 when it has none: for each chunk value v,
# the bounds of the runs of v and of its width neighbours v ^ 1, v ^ 2, v ^ 4, ... (the chunk values
# a radius-1 probe reads), as (start, end) pairs relative to the chunk's first value word, padded
# to whole cache lines (`neighbour_stride` halves).

# Plan: word offsets from arena[H_PLAN].
P_RADIUS = 0
P_PROBES = 1  # masks probed in all (0 with P_SCAN set: compare against every hash instead)
P_SCAN = 2
P_RADII = 3  # m words: per-chunk radius (as int64; -1: the chunk is not probed)
# then m + 1 words: chunk c's masks are masks[starts[c]:starts[c + 1]]; then the masks

# Lines from the start of the arena prefetched as a search begins: the header and a plan of up to 100
# probes, which the first steps read one after the other.
HEAD_LINES = 24

# Runs are prefetched this many probes ahead, RUN_LINES lines each: about 60 lines in flight, which
# keeps the core's miss buffers full (2 to 16 probes ahead measured the same). A run of 49 hashes
# (100,000 hashes, 11-bit chunks) spans 7 to 8 lines.
PREFETCH_AHEAD = 8
RUN_LINES = 8

# Values of hits kept during a query to skip runs whose matches were all reported (scratch words).
REPORTED = 16

# A packed hit: distance << 56 | slot, so sorting packed hits orders by (distance, slot). Returned to
# Python as slot << 7 | distance instead, which stays a one-digit Python int for slots below 2^23:
# arithmetic on larger ints takes CPython's slower paths, each some 0.3 µs with cold caches.
DISTANCE_SHIFT = 56
SLOT_MASK = (1 << DISTANCE_SHIFT) - 1
RESULT_DISTANCE_BITS = 7

_ONE = np.uint64(1)
_NO_HIT = np.int64(-1)
_MORE_HITS = np.int64(-2)
_NONE = np.int64(0)  # a hit count typed int64: a literal 0 would compile every callee twice


@_intrinsic
def _popcount(typingctx: Any, x: Any) -> Any:
    """The CPU's popcnt (LLVM ctpop); in vectorised loops LLVM uses a byte-table form."""
    sig = types.uint64(types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return sig, codegen


@_intrinsic
def _prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """Hint the CPU to start loading `array[index]`'s cache line (llvm.prefetch); never faults."""
    sig = types.void(array, index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type = signature.args[0]
        native = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, array_type, native, [args[1]], wraparound=False
        )
        i32, byte_pointer = ir.IntType(32), ir.IntType(8).as_pointer()
        function = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0"
        )
        address = builder.bitcast(pointer, byte_pointer)  # one declaration for every element type
        builder.call(function, [address, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return sig, codegen


def _view_at(element: Any) -> Any:
    """An intrinsic making a 1-d array of `length` `element`s at `address`, without an owner: the
    caller keeps the memory alive."""

    def view(typingctx: Any, address: Any, length: Any) -> Any:
        array_type = types.Array(element, 1, "C")
        sig = array_type(types.int64, types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            address_, length_ = args
            native = context.make_array(array_type)(context, builder)
            pointer_type = context.get_value_type(types.CPointer(element))  # type: ignore[no-untyped-call]
            size = context.get_constant(types.intp, element.bitwidth // 8)
            context.populate_array(
                native,
                data=builder.inttoptr(address_, pointer_type),
                shape=cgutils.pack_array(builder, [length_]),  # type: ignore[no-untyped-call]
                strides=cgutils.pack_array(builder, [size]),  # type: ignore[no-untyped-call]
                itemsize=size,
                meminfo=None,
            )
            return native._getvalue()

        return sig, codegen

    return view


_words_at = _intrinsic(_view_at(types.uint64))  # the arena
_halves_at = _intrinsic(_view_at(types.uint32))  # the arena as 32-bit halves (neighbour bounds)


@_jit()
def _at(arena: Any, index: Any) -> Any:
    """arena[index] as a signed int64 (a word index or count)."""
    return np.int64(arena[index])


@_jit()
def _prefetch_run(arena: Any, start: Any) -> None:
    """Prefetch the first RUN_LINES cache lines from arena[start], however long the run: a fixed count
    keeps the loop free of mispredicted exits, and the hardware prefetcher follows longer runs."""
    for i in range(RUN_LINES):
        _prefetch(arena, start + 8 * i)


@_jit()
def _count(arena: Any, lo: Any, hi: Any, query: Any, radius: Any) -> Any:
    """How many of arena[lo:hi] are within `radius` of `query`. Over a slice, so that the index is
    known not to be negative and LLVM vectorises the loop (twice as fast as indexing arena[p])."""
    run = arena[lo:hi]
    count = 0
    for p in range(run.shape[0]):
        count += _popcount(run[p] ^ query) <= radius
    return count


@_jit()
def _removed(arena: Any, slot: Any) -> Any:
    if arena[H_DEAD_COUNT] == 0:
        return False
    word = arena[_at(arena, H_DEAD) + np.int64(slot >> np.uint64(6))]
    return bool((word >> (slot & np.uint64(63))) & _ONE)


@_jit()
def _seen_earlier(arena: Any, plan: Any, difference: Any, chunk: Any) -> Any:
    """Whether an earlier probed chunk also holds this hash within its radius (so it was reported)."""
    for earlier in range(chunk):
        radius = _at(arena, plan + P_RADII + earlier)
        if radius >= 0:
            head = H_CHUNK + 4 * earlier
            part = (difference >> arena[head]) & ((_ONE << arena[head + 1]) - _ONE)
            if _popcount(part) <= np.uint64(radius):
                return True
    return False


@_jit()
def _report(arena: Any, slot: Any, distance: Any, hits: Any, found: Any) -> Any:
    if _removed(arena, slot):
        return found
    if found < hits.shape[0]:
        hits[found] = (distance << np.uint64(DISTANCE_SHIFT)) | slot
    return found + 1


@_jit()
def _scan_table(query: Any, arena: Any, hits: Any, found: Any) -> Any:
    """Every table hash compared (the plan for radii too wide to probe)."""
    radius = arena[_at(arena, H_PLAN) + P_RADIUS]
    delta = _at(arena, H_SLOT_DELTA)
    first = _at(arena, H_SCAN_FROM)
    end = first + _at(arena, H_BUILT)
    for lo in range(first, end, 512):
        hi = min(lo + 512, end)
        if _count(arena, lo, hi, query, radius) > 0:
            for p in range(lo, hi):
                distance = _popcount(arena[p] ^ query)
                if distance <= radius:
                    found = _report(arena, arena[p + delta], distance, hits, found)
    return found


@_jit()
def _scan_tail(query: Any, arena: Any, hits: Any, found: Any) -> Any:
    """The hashes added since the tables were built: unsorted, compared one by one."""
    radius = arena[_at(arena, H_PLAN) + P_RADIUS]
    built = _at(arena, H_BUILT)
    tail = _at(arena, H_TAIL)
    count = _at(arena, H_TAIL_COUNT)
    if _count(arena, tail, tail + count, query, radius) > 0:
        for j in range(count):
            distance = _popcount(arena[tail + j] ^ query)
            if distance <= radius:
                found = _report(arena, np.uint64(built + j), distance, hits, found)
    return found


@_jit()
def _walk_run(
    arena: Any, lo: Any, hi: Any, query: Any, chunk: Any, matches: Any, hits: Any, found: Any
) -> Any:
    """Report the `matches` hashes within range in table run arena[lo:hi] (chunk `chunk`), except
    those an earlier chunk's probes reach: a hash is reported from the first chunk that finds it.
    Reported values are kept in scratch words (up to REPORTED) for the caller's skipping."""
    plan = _at(arena, H_PLAN)
    radius = arena[plan + P_RADIUS]
    delta = _at(arena, H_SLOT_DELTA)
    reported = _at(arena, H_SCRATCH) + 2 * _at(arena, plan + P_PROBES)
    first = _at(arena, H_FIRST_FOUND)
    for p in range(lo, hi):
        difference = arena[p] ^ query
        distance = _popcount(difference)
        if distance > radius:
            continue
        if not _seen_earlier(arena, plan, difference, chunk):
            before = found
            found = _report(arena, arena[p + delta], distance, hits, found)
            if found > before and found - 1 - first < REPORTED:
                arena[reported + found - 1 - first] = arena[p]
        matches -= 1
        if matches == 0:
            break
    return found


def neighbour_stride(width: int) -> int:
    """Halves per neighbour block: a (start, end) pair for the value and each of its `width`
    neighbours, rounded up to whole cache lines (16 halves)."""
    return (2 * (width + 1) + 15) // 16 * 16


_neighbour_stride = _jit()(neighbour_stride)


@_jit()
def _neighbour_block(arena: Any, head: Any, own: Any) -> Any:
    """First half of the neighbour block of chunk value `own` of the chunk at arena[head:], or -1 when
    the chunk has none or the plan does not probe it at radius 1 (at radius 0 its offsets entry is
    one line already)."""
    blocks = _at(arena, head + 3)
    if blocks == 0:
        return np.int64(-1)
    chunk = (head - H_CHUNK) // 4
    if _at(arena, _at(arena, H_PLAN) + P_RADII + chunk) != 1:
        return np.int64(-1)
    return blocks + own * _neighbour_stride(_at(arena, head + 1))


@_jit()
def _probe(query: Any, arena: Any, halves: Any, hits: Any, found: Any) -> Any:
    """The multi-index search proper; see the module docstring for the three passes."""
    chunks = _at(arena, H_CHUNKS)
    plan = _at(arena, H_PLAN)
    radius = arena[plan + P_RADIUS]
    probes = _at(arena, plan + P_PROBES)
    starts = plan + P_RADII + chunks
    masks = starts + chunks + 1
    scratch = _at(arena, H_SCRATCH)
    reported = scratch + 2 * probes
    arena[H_FIRST_FOUND] = found
    first = found
    # Pass 1: where each probe's run bounds are, and a prefetch of their lines: the chunk value's
    # neighbour block, a line or two for all its probes, or the offsets entry of each probe.
    for c in range(chunks):
        head = H_CHUNK + 4 * c
        own = np.int64((query >> arena[head]) & ((_ONE << arena[head + 1]) - _ONE))
        block = _neighbour_block(arena, head, own)
        if block >= 0:
            for line in range(block, block + _neighbour_stride(_at(arena, head + 1)), 16):
                _prefetch(halves, line)
            continue
        table = _at(arena, head + 2)
        for k in range(_at(arena, starts + c), _at(arena, starts + c + 1)):
            _prefetch(arena, table + (own ^ _at(arena, masks + k)))
    # Pass 2: run bounds, and the first runs' lines. Probes of a radius-1 chunk come in the order of
    # its neighbour block (masks 0, 1, 2, 4, ...).
    built = _at(arena, H_BUILT)
    for c in range(chunks):
        head = H_CHUNK + 4 * c
        own = np.int64((query >> arena[head]) & ((_ONE << arena[head + 1]) - _ONE))
        block = _neighbour_block(arena, head, own)
        values = _at(arena, H_SCAN_FROM) + c * built
        table = _at(arena, head + 2)
        first_probe = _at(arena, starts + c)
        for k in range(first_probe, _at(arena, starts + c + 1)):
            if block >= 0:
                pair = block + 2 * (k - first_probe)
                arena[scratch + k] = values + np.int64(halves[pair])
                arena[scratch + probes + k] = values + np.int64(halves[pair + 1])
            else:
                entry = table + (own ^ _at(arena, masks + k))
                arena[scratch + k] = arena[entry]
                arena[scratch + probes + k] = arena[entry + 1]
    for k in range(min(PREFETCH_AHEAD, probes)):
        _prefetch_run(arena, _at(arena, scratch + k))
    # Pass 3: count the matches in each run, prefetching runs ahead.
    for c in range(chunks):
        head = H_CHUNK + 4 * c
        shift = arena[head]
        width_mask = (_ONE << arena[head + 1]) - _ONE
        own = (query >> shift) & width_mask
        for k in range(_at(arena, starts + c), _at(arena, starts + c + 1)):
            ahead = k + PREFETCH_AHEAD
            if ahead < probes:
                _prefetch_run(arena, _at(arena, scratch + ahead))
            lo = _at(arena, scratch + k)
            hi = _at(arena, scratch + probes + k)
            matches = _count(arena, lo, hi, query, radius)
            if matches == 0:  # the usual case
                continue
            # A hash within range is in the run of every chunk it is close on (a copy of the query:
            # in all of them). When the hits already reported account for every match here, the
            # run need not be walked again.
            if found - first <= REPORTED:
                key = own ^ arena[masks + k]
                known = 0
                for i in range(found - first):
                    if (arena[reported + i] >> shift) & width_mask == key:
                        known += 1
                if known == matches:
                    continue
            found = _walk_run(arena, lo, hi, query, c, matches, hits, found)
    return found


@_jit()
def _collect(query: Any, arena: Any, halves: Any, hits: Any, found: Any) -> Any:
    """Write every live hash within the plan's radius of `query` to hits[found:] as a packed hit
    (distance << 56 | slot); return the new end. Only hits up to len(hits) are written; a caller
    whose result is longer retries with room for all."""
    plan = _at(arena, H_PLAN)
    if arena[plan + P_SCAN] != 0:
        found = _scan_table(query, arena, hits, found)
    elif arena[plan + P_PROBES] > 0:
        found = _probe(query, arena, halves, hits, found)
    if arena[H_TAIL_COUNT] > 0:
        found = _scan_tail(query, arena, hits, found)
    return found


@_jit()
def _insertion_sort(hits: Any, count: Any) -> None:
    """Sort hits[:count] in place: a handful of hits, and numba's own sort takes seconds to compile."""
    for i in range(1, count):
        hit = hits[i]
        j = i - 1
        while j >= 0 and hits[j] > hit:
            hits[j + 1] = hits[j]
            j -= 1
        hits[j + 1] = hit


@_jit()
def _result(hit: Any) -> Any:
    """A packed hit as returned to Python: slot << 7 | distance."""
    slot = (hit & np.uint64(SLOT_MASK)) << np.uint64(RESULT_DISTANCE_BITS)
    return np.int64(slot | (hit >> np.uint64(DISTANCE_SHIFT)))


@_jit()
def search(query: Any, address: Any, length: Any) -> Any:
    """One query (the hash as an unsigned int) against the arena at `address` (`length` words), with
    its installed plan.

    Returns two hits as slot << 7 | distance, nearest first, -1 for none: one or two hits (nearly
    every query) need no array read back. For n > 2 hits returns (n, -2), the hits written to the
    arena's result area in that form, nearest first, when they fit there.
    """
    arena = _words_at(address, length)
    for line in range(HEAD_LINES):
        _prefetch(arena, 8 * line)
    out = _at(arena, H_OUT)
    # A second view rather than a slice: a slice's type differs, and numba would compile every
    # function below twice.
    hits = _words_at(address + 8 * out, _at(arena, H_OUT_CAP))
    found = _collect(np.uint64(query), arena, _halves_at(address, 2 * length), hits, _NONE)
    if found < 2:
        return (_result(hits[0]) if found == 1 else _NO_HIT, _NO_HIT)
    if found == 2:
        nearer, further = min(hits[0], hits[1]), max(hits[0], hits[1])
        return (_result(nearer), _result(further))
    if found <= hits.shape[0]:
        _insertion_sort(hits, found)
        for i in range(found):
            hits[i] = _result(hits[i])
    return (found, _MORE_HITS)


@_jit()
def collect(query: Any, address: Any, length: Any, hits: Any) -> Any:
    """`_collect` into a caller's array (for results too large for the arena's result area)."""
    arena = _words_at(address, length)
    return _collect(np.uint64(query), arena, _halves_at(address, 2 * length), hits, _NONE)  # type: ignore[no-any-return]


@_jit()
def _join_runs(
    arena: Any, lo: Any, hi: Any, other_lo: Any, other_hi: Any, chunk: Any, hits: Any, owners: Any, found: Any
) -> Any:
    """Pairs within range between table runs arena[lo:hi] and arena[other_lo:other_hi] (the same run
    when other_lo == lo: then each pair once), left out when an earlier chunk's join has them."""
    plan = _at(arena, H_PLAN)
    radius = arena[plan + P_RADIUS]
    delta = _at(arena, H_SLOT_DELTA)
    for i in range(lo, hi):
        value = arena[i]
        start = i + 1 if other_lo == lo else other_lo
        if _count(arena, start, other_hi, value, radius) == 0:  # the usual case
            continue
        slot = arena[i + delta]
        if _removed(arena, slot):
            continue
        for j in range(start, other_hi):
            difference = arena[j] ^ value
            distance = _popcount(difference)
            if distance > radius or _seen_earlier(arena, plan, difference, chunk):
                continue
            other = arena[j + delta]
            if not _removed(arena, other):
                if found < hits.shape[0]:
                    hits[found] = (distance << np.uint64(DISTANCE_SHIFT)) | other
                    owners[found] = slot
                found += 1
    return found


@_jit()
def collect_pairs(
    values: npt.NDArray[np.uint64],
    address: int,
    length: int,
    hits: npt.NDArray[np.uint64],
    owners: npt.NDArray[np.uint64],
) -> Any:
    """Every pair of live hashes within the plan's radius, once: one slot in `owners`, the other and
    their distance packed in `hits`. Returns the count; only as many as fit are written.

    A self-join of the tables rather than a query per hash: two hashes within range are close on
    some chunk c, so they sit in runs of chunk c whose chunk values differ by one of its probe
    masks. Joining those runs pairwise compares each such pair once, run against run, in cache,
    instead of fetching a query's scattered runs from memory 100,000 times. Hashes in the tail are
    then queried one by one (`values` holds every slot's hash)."""
    arena = _words_at(address, length)
    found = _NONE
    chunks = _at(arena, H_CHUNKS)
    built = _at(arena, H_BUILT)
    plan = _at(arena, H_PLAN)
    if arena[plan + P_SCAN] != 0:
        first = _at(arena, H_SCAN_FROM)
        found = _join_runs(arena, first, first + built, first, first + built, 0, hits, owners, found)
    else:
        starts = plan + P_RADII + chunks
        masks = starts + chunks + 1
        for c in range(chunks):
            head = H_CHUNK + 4 * c
            table = _at(arena, head + 2)
            for key in range(1 << _at(arena, head + 1)):
                lo = _at(arena, table + key)
                hi = _at(arena, table + key + 1)
                if lo == hi:
                    continue
                for k in range(_at(arena, starts + c), _at(arena, starts + c + 1)):
                    other = key ^ _at(arena, masks + k)
                    if other >= key:  # each pair of runs once
                        other_lo = _at(arena, table + other)
                        other_hi = _at(arena, table + other + 1)
                        found = _join_runs(arena, lo, hi, other_lo, other_hi, c, hits, owners, found)
    # A tail hash pairs with the tables' hashes and with later tail hashes.
    tail_count = _at(arena, H_TAIL_COUNT)
    for j in range(tail_count):
        own = built + j
        if _removed(arena, np.uint64(own)):
            continue
        start = found
        end = _collect(values[own], arena, _halves_at(address, 2 * length), hits, found)
        # Keep the pairs with a later slot; the hits already written are compacted in place.
        for i in range(start, end):
            if i >= hits.shape[0]:
                found += end - i  # overflowed: an upper bound is enough for the retry
                break
            slot = np.int64(hits[i] & np.uint64(SLOT_MASK))
            if slot < built or slot > own:
                if found < hits.shape[0]:
                    hits[found] = hits[i]
                    owners[found] = own
                found += 1
    return found


def compiled_search() -> Callable[[int, int, int], tuple[int, int]]:
    """Compile every entry point (or load it from numba's cache) and return `search` as its compiled
    overload: calling that directly skips the dispatcher's typing of the arguments (0.4 µs of a cold
    call's 1.1 µs)."""
    search.compile("UniTuple(int64, 2)(uint64, int64, int64)")
    collect.compile("int64(uint64, int64, int64, uint64[::1])")
    collect_pairs.compile("int64(uint64[::1], int64, int64, uint64[::1], uint64[::1])")
    try:
        signature = (types.uint64, types.int64, types.int64)
        return cast(Callable[[int, int, int], tuple[int, int]], search.overloads[signature].entry_point)
    except (AttributeError, KeyError):  # a numba without the attribute: the dispatcher works too
        return cast(Callable[[int, int, int], tuple[int, int]], search)
