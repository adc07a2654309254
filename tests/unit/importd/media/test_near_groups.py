"""Connected groups of near pairs: degrees, members, and slots left alone."""

from __future__ import annotations

import numpy as np

from importd.media.near_groups import NearGroup, components


def test_pairs_become_connected_groups_with_degrees() -> None:
    # 0-1, 1-2 (a chain), 4-5; 3 and 6 in no pair.
    source = np.array([0, 1, 4], np.int64)
    target = np.array([1, 2, 5], np.int64)
    degree, groups = components(source, target, 7)
    assert sorted(sorted(g) for g in groups) == [[0, 1, 2], [4, 5]]
    assert degree.tolist() == [1, 2, 1, 0, 1, 1, 0]


def test_a_pair_given_twice_or_reversed_is_one_link_for_grouping() -> None:
    degree, groups = components(np.array([0, 1], np.int64), np.array([1, 0], np.int64), 2)
    assert groups == [[0, 1]] and degree.tolist() == [2, 2]


def test_near_group_is_a_frozen_value() -> None:
    group = NearGroup("a", (("a", 0.0), ("b", 2.0)))
    assert group == NearGroup("a", (("a", 0.0), ("b", 2.0)))
    assert hash(group) == hash(NearGroup("a", (("a", 0.0), ("b", 2.0))))
