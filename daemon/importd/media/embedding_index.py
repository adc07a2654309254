"""Near-duplicate search over face embeddings by cosine similarity.

`EmbeddingIndex` is a flat float32 matrix: one matrix-vector product answers "which faces are this
person". At a studio's scale (tens of thousands of faces) that is a few milliseconds per query, and
exact; an approximate index (HNSW) would only pay off well beyond a million faces.
"""

from __future__ import annotations

from typing import Generic

import numpy as np
import numpy.typing as npt

from importd.media.near_groups import K, NearGroup, components


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
        degree, members_by_label = components(source, target, n)
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
