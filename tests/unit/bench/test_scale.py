"""The scale section's soak verdict: a flat series is flat, a leak is seen, warm-up left out."""

from __future__ import annotations

import pytest

from bench.scale import flatness, slope_per_hour


def test_the_slope_is_in_mb_per_hour() -> None:
    assert slope_per_hour([(t, 100 + t / 360) for t in range(0, 1800, 10)]) == pytest.approx(10)
    assert slope_per_hour([(0, 5.0)]) == 0.0


def test_a_flat_run_after_its_warm_up_shows_no_growth_and_a_leak_does() -> None:
    # 30 minutes every 10 s: climbing during the first 2 minutes, then flat with noise.
    flat = [(t, min(200.0, 150 + t / 2.4) + (1 if t % 20 else -1)) for t in range(0, 1801, 10)]
    verdict = flatness(flat, 1800)
    assert verdict["warmup_s"] == 180 and verdict["window_s"] == 300
    assert abs(verdict["growth_mb"]) <= 2 and abs(verdict["slope_mb_per_h"]) < 2
    leak = [(t, 200 + t / 60) for t in range(0, 1801, 10)]  # 60 MB an hour
    verdict = flatness(leak, 1800)
    assert verdict["growth_mb"] > 20 and verdict["slope_mb_per_h"] == pytest.approx(60)
