"""The near-duplicate benchmark itself: exact answers, and every condition it reports measured."""

from __future__ import annotations

from bench.media import _alternating_blocks, bench_near_duplicates


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


def test_near_duplicate_bench_answers_like_the_scan_in_every_condition() -> None:
    figures = bench_near_duplicates(quick=True)
    assert figures["result_mismatches"] == 0
    assert figures["groups_found"] > 0
    assert 0 < figures["index_p50_us"] <= figures["index_p99_us"]
    for key in ("scan_p50_us", "cold_index_p50_us", "cold_scan_p50_us", "after_scan_index_p50_us"):
        assert figures[key] > 0, key
    names = [check["name"] for check in figures["checks"]]
    assert names[0].startswith("near-dup query p50 (20,000 pHashes")
    assert any("cold caches" in name for name in names)
    assert any("after a scan" in name for name in names)
    judged = figures["checks"][0]
    assert judged["baseline"] == figures["scan_p50_us"]
