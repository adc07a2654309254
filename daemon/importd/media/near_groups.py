"""Groups of near-duplicates, as every near-duplicate search returns them.

A group is a connected component of the "near" relation (any two members joined by a chain of
near pairs), found by scipy's `connected_components` over the pairs a search produced; the anchor
is the member with the most near neighbours. `hash_index`, `embedding_index` and `video_groups`
each find their pairs their own way and group them here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_array  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

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


def components(
    source: npt.NDArray[np.int64], target: npt.NDArray[np.int64], size: int
) -> tuple[npt.NDArray[np.int64], list[list[int]]]:
    """The pairs (source[i], target[i]) of `size` slots as (each slot's degree, the slots of each
    connected group of two or more)."""
    graph = coo_array((np.ones(len(source), dtype=np.int8), (source, target)), shape=(size, size))
    _, label = connected_components(graph, directed=False)
    degree = np.bincount(np.concatenate([source, target]), minlength=size)
    groups: dict[int, list[int]] = {}
    for slot in np.unique(np.concatenate([source, target])).tolist():
        groups.setdefault(int(label[slot]), []).append(slot)
    return degree, list(groups.values())
