"""EmbeddingIndex on known vectors: queries, groups, removal, growth."""

from __future__ import annotations

import numpy as np
import pytest

from importd.media.embedding_index import EmbeddingIndex


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
