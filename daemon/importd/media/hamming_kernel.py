"""The compiled inner loop of `nearindex.HashIndex`: probe multi-index tables, check full distances.

numpy alone cannot do this: one query is a few hundred tiny table runs, and at about a microsecond
per numpy call a vectorised query is no faster than scanning every hash. numba compiles the loop on
first use (about a second, once per process) and releases the GIL while it runs.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

_ONE = np.uint64(1)


@numba.njit(inline="always")  # type: ignore[misc]
def _popcount(x: np.uint64) -> np.uint64:
    # LLVM turns this SWAR form into the CPU's popcnt instruction.
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)  # type: ignore[no-any-return]


@numba.njit(nogil=True)  # type: ignore[misc]
def search(
    queries: npt.NDArray[np.uint64],
    radius: np.uint64,
    shifts: npt.NDArray[np.int64],
    widths: npt.NDArray[np.int64],
    bases: npt.NDArray[np.int64],
    radii: npt.NDArray[np.int64],
    masks: npt.NDArray[np.uint64],
    starts: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    sorted_values: npt.NDArray[np.uint64],
    sorted_slots: npt.NDArray[np.int64],
    tail_values: npt.NDArray[np.uint64],
    tail_first: np.int64,
    alive: npt.NDArray[np.bool_],
    out_owner: npt.NDArray[np.int64],
    out_slot: npt.NDArray[np.int64],
    out_distance: npt.NDArray[np.int64],
) -> int:
    """Write (query index, slot, distance) of every live hit; return how many there are.

    Chunk c of each query is probed with `masks[starts[c]:starts[c + 1]]` (radius `radii[c]`; -1 skips
    the chunk). A hash within range on several chunks is reported from the first only. Then the
    unsorted tail (slots from `tail_first`) is scanned. At most len(out_slot) hits are written; the
    caller retries with more room when the returned count is larger.
    """
    found = 0
    room = out_slot.shape[0]
    for q in range(queries.shape[0]):
        query = queries[q]
        for c in range(shifts.shape[0]):
            if radii[c] < 0:
                continue
            own = np.int64((query >> np.uint64(shifts[c])) & ((_ONE << np.uint64(widths[c])) - _ONE))
            for k in range(starts[c], starts[c + 1]):
                key = bases[c] + (own ^ np.int64(masks[k]))
                for p in range(offsets[key], offsets[key + 1]):
                    difference = sorted_values[p] ^ query
                    distance = _popcount(difference)
                    if distance > radius:
                        continue
                    seen = False
                    for earlier in range(c):
                        if radii[earlier] >= 0:
                            part = (difference >> np.uint64(shifts[earlier])) & (
                                (_ONE << np.uint64(widths[earlier])) - _ONE
                            )
                            if _popcount(part) <= np.uint64(radii[earlier]):
                                seen = True
                                break
                    slot = sorted_slots[p]
                    if seen or not alive[slot]:
                        continue
                    if found < room:
                        out_owner[found] = q
                        out_slot[found] = slot
                        out_distance[found] = np.int64(distance)
                    found += 1
        for j in range(tail_values.shape[0]):
            distance = _popcount(tail_values[j] ^ query)
            slot = tail_first + j
            if distance <= radius and alive[slot]:
                if found < room:
                    out_owner[found] = q
                    out_slot[found] = slot
                    out_distance[found] = np.int64(distance)
                found += 1
    return found
