"""HashIndex against a brute-force scan and a model, on both search kernels (C and numpy)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.media import hamming_kernel, hash_index
from importd.media.hash_index import NEAR_DUPLICATE_MAX_DISTANCE, HashIndex, _layout, _probing
from importd.media.hashes import hamming, to_signed64, to_unsigned64


@pytest.fixture(autouse=True, params=["c", "numpy"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> hamming_kernel.Kernel:
    """Every test runs on the C loops and on the numpy ones: both must answer alike."""
    chosen = hamming_kernel.COMPILED if request.param == "c" else hamming_kernel.NUMPY
    if chosen is None:
        pytest.skip("the C extension is not built")
    monkeypatch.setattr(hamming_kernel, "kernel", chosen)
    return chosen


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


def test_empty_index() -> None:
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


# -- the search structure against a model, through every path: tables, tail, removals, rebuilds ------


class Model:
    """What a HashIndex should answer: a dict in insertion order (a replaced key moves to the end)."""

    def __init__(self) -> None:
        self.items: dict[int, int] = {}

    def add(self, key: int, value: int) -> None:
        self.items.pop(key, None)
        self.items[key] = to_unsigned64(value)

    def query(self, value: int, radius: int) -> list[tuple[int, int]]:
        value = to_unsigned64(value)
        radius = max(0, min(64, radius))
        order = {key: i for i, key in enumerate(self.items)}
        hits = [
            (hamming(v, value), order[k], k) for k, v in self.items.items() if hamming(v, value) <= radius
        ]
        return [(k, d) for d, _, k in sorted(hits)]

    def group_sets(self, radius: int) -> set[frozenset[int]]:
        keys = list(self.items)
        parent = {k: k for k in keys}

        def root(k: int) -> int:
            while parent[k] != k:
                k = parent[k]
            return k

        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                if hamming(self.items[a], self.items[b]) <= radius:
                    parent[root(a)] = root(b)
        groups: dict[int, set[int]] = {}
        for k in keys:
            groups.setdefault(root(k), set()).add(k)
        return {frozenset(g) for g in groups.values() if len(g) > 1}


Session = tuple[int | None, int, bool, list[tuple[str, int, int]]]


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A random index configuration and a sequence of adds (often near copies of earlier hashes),
    removals and queries, with hashes given signed or unsigned."""
    chunks = draw(st.sampled_from([None, 4, 5, 6, 8, 16]))
    # So few hashes are cheaper to scan than to probe; the test makes probing free half the time.
    probe: bool = draw(st.booleans())
    min_rebuild = draw(st.sampled_from([1, 3, 40]))
    values: list[int] = []
    steps: list[tuple[str, int, int]] = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["add", "add", "add", "remove", "query"]))
        if kind == "add" or not values:
            copy: bool = draw(st.booleans())
            if values and copy:
                bits = draw(st.lists(st.integers(0, 63), max_size=14))
                value = near(draw(st.sampled_from(values)), bits)
            else:
                value = draw(st.integers(0, 2**64 - 1))
            values.append(value)
            signed = draw(st.booleans())
            steps.append(("add", draw(st.integers(0, 30)), to_signed64(value) if signed else value))
        elif kind == "remove":
            steps.append(("remove", draw(st.integers(0, 30)), 0))
        else:
            bits = draw(st.lists(st.integers(0, 63), max_size=12))
            steps.append(("query", near(draw(st.sampled_from(values)), bits), draw(st.integers(-1, 70))))
    return chunks, min_rebuild, probe, steps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_answers_equal_a_brute_force_model(session: Session) -> None:
    chunks, min_rebuild, probe, steps = session
    with pytest.MonkeyPatch.context() as patch:
        if probe:
            patch.setattr(hash_index, "_PROBE_COST", 0.0)
        check_session(chunks, min_rebuild, steps)


def check_session(chunks: int | None, min_rebuild: int, steps: list[tuple[str, int, int]]) -> None:
    index: HashIndex[int] = HashIndex(chunks=chunks, min_rebuild=min_rebuild)
    model = Model()
    for kind, a, b in steps:
        if kind == "add":
            index.add(a, b)
            model.add(a, b)
        elif kind == "remove":
            assert index.remove(a) == (model.items.pop(a, None) is not None)
        else:
            for value in (a, to_signed64(a)):
                assert index.query(value, b) == model.query(value, b)
        assert len(index) == len(model.items)
    for radius in (0, 6, 10, 30):
        groups = index.groups(radius)
        assert {frozenset(k for k, _ in g.members) for g in groups} == model.group_sets(radius)
        for group in groups:
            anchor = model.items[group.anchor]
            assert group.members[0] == (group.anchor, 0.0)
            assert all(d == hamming(model.items[k], anchor) for k, d in group.members)


def test_tail_and_removals_answer_like_built_tables() -> None:
    """The same hashes searched three ways: all in built tables; all in the unsorted tail (never
    rebuilt); and through removals, replacements and tombstones."""
    rng = np.random.default_rng(21)
    values = [int(v) for v in rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64)]
    for i in range(0, 3000, 3):
        values[i + 1] = near(values[i], rng.choice(64, int(rng.integers(0, 12)), replace=False).tolist())
    built: HashIndex[int] = HashIndex()
    built.add_many(enumerate(values))
    tail: HashIndex[int] = HashIndex(min_rebuild=1 << 20)
    for key, value in enumerate(values):
        tail.add(key, value)
    churned: HashIndex[int] = HashIndex(min_rebuild=700)
    for key, value in enumerate(values):
        churned.add(key, value)
        if key % 5 == 0:
            churned.add(key + 10_000, ~value & ((1 << 64) - 1))  # far from everything, then removed
            churned.remove(key + 10_000)
    assert len(built) == len(tail) == len(churned) == 3000
    for key in rng.choice(3000, 60, replace=False).tolist():
        expected = built.query(values[key], NEAR_DUPLICATE_MAX_DISTANCE)
        assert any(k == key for k, _ in expected)
        assert tail.query(values[key], NEAR_DUPLICATE_MAX_DISTANCE) == expected
        assert churned.query(values[key], NEAR_DUPLICATE_MAX_DISTANCE) == expected
    grouped = [[(k, d) for k, d in g.members] for g in built.groups(NEAR_DUPLICATE_MAX_DISTANCE)]
    assert [[(k, d) for k, d in g.members] for g in tail.groups(NEAR_DUPLICATE_MAX_DISTANCE)] == grouped
    assert [[(k, d) for k, d in g.members] for g in churned.groups(NEAR_DUPLICATE_MAX_DISTANCE)] == grouped


def test_results_longer_than_the_result_area() -> None:
    index: HashIndex[int] = HashIndex()
    base = 0x0123_4567_89AB_CDEF
    index.add_many((i, near(base, [i % 64, (i * 7) % 64])) for i in range(1000))
    hits = index.query(base, 2)
    assert len(hits) == 1000
    assert [d for _, d in hits] == sorted(d for _, d in hits)
    # Both flips cancel when i % 64 == 7i % 64, i.e. every 32nd key; ties in insertion order.
    assert [k for k, d in hits if d == 0] == list(range(0, 1000, 32))
    assert index.query(base, 64) == hits  # the full-scan plan gives the same


def test_plans_cover_the_radius() -> None:
    """Per-chunk radii satisfy the pigeonhole bound for every radius, and wide radii scan."""
    for n in (0, 50, 5_000, 100_000, 2_000_000):
        layout = _layout(n, None)
        assert sum(layout) == 64 and max(layout) <= 16
        for radius in range(65):
            _, radii = _probing(layout, n, radius)
            assert sum(r + 1 for r in radii) == radius + 1
            assert all(-1 <= r <= w for r, w in zip(radii, layout, strict=True))
    assert _layout(100_000, None) == (11, 11, 11, 11, 11, 9)  # 61 probes, ~3,100 hashes compared
    assert _layout(0, 8) == (8,) * 8 and _layout(0, 5) == (13, 13, 13, 13, 12)


# -- distances either side of the radius, and the result order --------------------------------------


def test_copies_either_side_of_the_radius() -> None:
    """Copies at every distance up to 14 (10 is in range, 11 is not), through removals and the tail,
    at the default radius and at radii that probe some chunks at radius 1."""
    rng = np.random.default_rng(33)
    values = [int(v) for v in rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64)]
    for i in range(0, 3000, 3):
        values[i + 1] = near(values[i], rng.choice(64, i // 3 % 15, replace=False).tolist())
    index: HashIndex[int] = HashIndex(min_rebuild=600)
    index.add_many(enumerate(values[:2500]))
    for key in range(2500, 3000):  # into the tail
        index.add(key, values[key])
    for key in range(0, 3000, 7):
        index.remove(key)
    items = {k: v for k, v in enumerate(values) if k % 7}
    for key in rng.choice(3000, 80, replace=False).tolist():
        for radius in (NEAR_DUPLICATE_MAX_DISTANCE, 1, 3):
            assert as_pairs(index.query(values[key], radius)) == brute(items, values[key], radius)
    for i in range(0, 3000, 3):
        if i % 7 and (i + 1) % 7:
            distance = hamming(values[i], values[i + 1])
            found = {k for k, _ in index.query(values[i], NEAR_DUPLICATE_MAX_DISTANCE)}
            assert (i + 1 in found) == (distance <= NEAR_DUPLICATE_MAX_DISTANCE)
    keys = np.array(list(items))
    hashes = np.array(list(items.values()), np.uint64)
    close = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= NEAR_DUPLICATE_MAX_DISTANCE
    rows, cols = np.nonzero(np.triu(close, 1))
    group_of = {k: i for i, g in enumerate(index.groups(NEAR_DUPLICATE_MAX_DISTANCE)) for k, _ in g.members}
    assert len(rows) > 500
    assert all(
        group_of[a] == group_of[b] for a, b in zip(keys[rows].tolist(), keys[cols].tolist(), strict=True)
    )
    assert set(group_of) == set(keys[rows].tolist()) | set(keys[cols].tolist())


def test_one_two_and_more_hits_in_order() -> None:
    """Hits nearest first, ties in insertion order, for hashes given signed, unsigned or wider."""
    base = 0xFEDC_BA98_7654_3210
    index: HashIndex[str] = HashIndex()
    index.add_many([("far", near(base, [1, 2, 3])), ("near", near(base, [5])), ("same", base)])
    index.add_many([("tie", near(base, [9]))])
    assert index.query(base, 0) == [("same", 0)]
    assert index.query(near(base, [5]), 0) == [("near", 0)]
    assert index.query(base, 1) == [("same", 0), ("near", 1), ("tie", 1)]
    assert index.query(near(base, [9]), 1) == [("tie", 0), ("same", 1)]
    assert index.query(near(base, [5, 9]), 1) == [("near", 1), ("tie", 1)]
    assert index.query(base, 3) == [("same", 0), ("near", 1), ("tie", 1), ("far", 3)]
    assert index.query(to_signed64(base), 1) == index.query(base, 1)
    assert index.query(base + (5 << 64), 1) == index.query(base, 1)  # wider: its low 64 bits
    assert index.query(~base & ((1 << 64) - 1), 10) == []
