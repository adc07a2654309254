"""HashIndex against a brute-force scan, and EmbeddingIndex on known vectors."""

from __future__ import annotations

import numpy as np
import pytest

from importd.media.hashes import hamming, to_signed64
from importd.media.nearindex import NEAR_DUPLICATE_MAX_DISTANCE, EmbeddingIndex, HashIndex, compile_search


def near(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def brute(items: dict[int, int], query: int, radius: int) -> list[tuple[int, int]]:
    return sorted((hamming(v, query), k) for k, v in items.items() if hamming(v, query) <= radius)


def as_pairs(hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted((d, k) for k, d in hits)


@pytest.mark.parametrize("chunks", [None, 4, 5, 8, 16])
def test_query_equals_brute_force(chunks: int | None) -> None:
    rng = np.random.default_rng(chunks or 0)
    items: dict[int, int] = {}
    for key in range(3000):
        if key % 3 and key > 0:  # near copies of earlier hashes at every distance up to 16
            flips = rng.choice(64, int(rng.integers(0, 17)), replace=False).tolist()
            items[key] = near(items[int(rng.integers(0, key))], flips)
        else:
            items[key] = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
    index: HashIndex[int] = HashIndex(chunks=chunks, min_rebuild=500)
    for key, value in items.items():  # mixes built tables with an unsorted tail
        index.add(key, value)
    for radius in (0, 3, 10, 16, 40):
        for key in rng.choice(3000, 40, replace=False).tolist():
            assert as_pairs(index.query(items[key], radius)) == brute(items, items[key], radius)


def test_empty_index_and_compile_ahead() -> None:
    compile_search()
    index: HashIndex[str] = HashIndex()
    assert index.query(12345, 10) == [] and index.groups(10) == [] and len(index) == 0
    index.add("only", 12345)
    assert index.query(12345, 0) == [("only", 0)] and index.groups(10) == []
    assert "only" in index and "other" not in index


def test_chunk_count_is_bounded() -> None:
    with pytest.raises(ValueError, match="between 4 and 16"):
        HashIndex(chunks=2)


def test_signed_and_unsigned_forms_are_the_same_hash() -> None:
    index: HashIndex[str] = HashIndex()
    value = (1 << 63) | 0b1011
    index.add("a", to_signed64(value))
    assert index.query(value, 0) == [("a", 0)]
    assert index.query(to_signed64(value ^ 0b11), 2) == [("a", 2)]


def test_remove_and_replace() -> None:
    index: HashIndex[str] = HashIndex(min_rebuild=4)
    base = 0x0123_4567_89AB_CDEF
    for i in range(20):
        index.add(f"k{i}", near(base, [i]))
    assert len(index) == 20
    assert index.remove("k3") and not index.remove("k3")
    index.add("k4", ~base & ((1 << 64) - 1))  # replaced: now far away
    keys = {k for k, _ in index.query(base, 1)}
    assert keys == {f"k{i}" for i in range(20)} - {"k3", "k4"}
    for i in range(20):  # enough removals to trigger a compaction
        index.remove(f"k{i}")
    assert len(index) == 0 and index.query(base, 64) == []
    index.add("again", base)
    assert index.query(base, 0) == [("again", 0)]


def test_groups_are_connected_components_with_an_anchor() -> None:
    index: HashIndex[str] = HashIndex()
    a = 0x0F0F_0F0F_0F0F_0F0F
    b = 0x3333_CCCC_3333_CCCC
    index.add_many(
        [
            ("a0", a),
            ("a1", near(a, [1, 2])),
            ("a2", near(a, [1, 2, 3, 4, 5, 6, 7, 8])),  # far from a0, near a1: joins through it
            ("b0", b),
            ("b1", near(b, [40])),
            ("lonely", 0xFFFF_0000_FFFF_0000),
        ]
    )
    groups = index.groups(6)
    assert [sorted(k for k, _ in g.members) for g in groups] == [["a0", "a1", "a2"], ["b0", "b1"]]
    first = groups[0]
    assert first.anchor == "a1" and first.members[0] == ("a1", 0.0)
    assert dict(first.members) == {"a1": 0.0, "a0": 2.0, "a2": 6.0}
    assert index.groups(0) == []


def test_groups_equal_brute_force_pairs() -> None:
    rng = np.random.default_rng(5)
    values = [int(v) for v in rng.integers(0, 2**63, 2000)]
    for i in range(0, 2000, 10):
        values[i + 1] = near(values[i], rng.choice(64, 5, replace=False).tolist())
    index: HashIndex[int] = HashIndex()
    index.add_many(enumerate(values))
    groups = index.groups(NEAR_DUPLICATE_MAX_DISTANCE)
    grouped = {frozenset(k for k, _ in g.members) for g in groups}
    pairs = {
        frozenset((i, j))
        for i in range(2000)
        for j in range(i + 1, min(i + 2, 2000))
        if hamming(values[i], values[j]) <= NEAR_DUPLICATE_MAX_DISTANCE
    }
    assert pairs <= grouped
    assert all(len(g) == 2 for g in grouped)  # random hashes are never near each other


def test_embedding_index() -> None:
    rng = np.random.default_rng(9)
    person = rng.standard_normal(512).astype(np.float32)
    other = rng.standard_normal(512).astype(np.float32)
    index: EmbeddingIndex[int] = EmbeddingIndex()
    index.add(1, person)
    index.add(2, person + 0.3 * rng.standard_normal(512).astype(np.float32))
    index.add(3, other)
    hits = index.query(person, 0.5)
    assert [k for k, _ in hits] == [1, 2]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5) and 0.5 < hits[1][1] < 1.0
    groups = index.groups(0.5)
    assert [sorted(k for k, _ in g.members) for g in groups] == [[1, 2]]
    assert index.remove(1) and not index.remove(1) and len(index) == 2
    assert [k for k, _ in index.query(person, 0.5)] == [2]
    index.add(3, person)  # re-adding a key replaces its embedding
    assert sorted(k for k, _ in index.query(person, 0.5)) == [2, 3]
    with pytest.raises(ValueError, match="dimensions"):
        index.add(4, np.ones(128, np.float32))
    with pytest.raises(ValueError, match="direction"):
        index.add(4, np.zeros(512, np.float32))


def test_embedding_index_grows() -> None:
    index: EmbeddingIndex[int] = EmbeddingIndex(dimensions=8)
    for key in range(1000):
        vector = np.zeros(8, np.float32)
        vector[key % 8] = 1.0
        index.add(key, vector)
    unit = np.eye(8, dtype=np.float32)[3]
    assert len(index.query(unit, 0.99)) == 125
