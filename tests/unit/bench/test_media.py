"""The near-duplicate benchmarks themselves: exact answers, and every figure they report measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.media import _alternating_blocks, bench_dupes, bench_near_duplicates, near_duplicate_hashes


def test_alternating_blocks_time_every_value_once_per_side_in_block_order() -> None:
    calls: list[tuple[str, int]] = []
    first_us, second_us = _alternating_blocks(
        lambda v: calls.append(("a", v)), lambda v: calls.append(("b", v)), list(range(5)), block=2
    )
    assert calls == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1),
        ("a", 2), ("a", 3), ("b", 2), ("b", 3),
        ("a", 4), ("b", 4),
    ]  # fmt: skip
    assert len(first_us) == len(second_us) == 5
    assert all(t >= 0 for t in first_us + second_us)


def test_near_duplicate_bench_answers_like_the_scan() -> None:
    figures = bench_near_duplicates(quick=True)
    assert figures["result_mismatches"] == 0
    assert figures["groups_found"] > 0
    assert 0 < figures["index_p50_us"] <= figures["index_p99_us"]
    assert figures["scan_p50_us"] > 0
    names = [check["name"] for check in figures["checks"]]
    assert names[0].startswith("near-dup query p50 (20,000 pHashes")
    judged = figures["checks"][0]
    assert judged["baseline"] == figures["scan_p50_us"]
    assert judged["target_kind"] == "info"  # a lookup sits in a round trip of a millisecond


def test_one_hash_in_ten_is_a_near_copy_of_the_one_before() -> None:
    hashes = near_duplicate_hashes(1001)
    distances = np.bitwise_count(hashes[1::10] ^ hashes[0::10][:100])
    assert len(distances) == 100 and distances.min() >= 1 and distances.max() <= 12
    assert np.bitwise_count(hashes[2::10] ^ hashes[1::10][:100]).min() > 12  # the others are random


def test_dupes_bench_times_the_real_client_and_its_groups_are_exact(tmp_path: Path) -> None:
    figures = bench_dupes(tmp_path, quick=True)
    found = figures["20000"]
    assert found["groups_match_faiss"] is True  # the daemon's groups are faiss' pairs, connected
    assert found["groups"] > 1500
    assert found["dupes_s"] > 0 and found["faiss_s"] > 0 and found["numpy_s"] > 0
    assert found["faiss_sample"] == found["numpy_sample"] == 20_000  # nothing scaled at this size
    judged = figures["checks"][0]
    assert judged["name"].startswith("importctl dupes --kind near (20,000 pHashes)")
    assert judged["baseline"] == found["faiss_s"] and judged["target_kind"] == "ratio_at_most"
