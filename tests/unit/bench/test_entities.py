from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[3] / "bench" / "entities.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_entities", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gap_report_bench_runs_small_and_stays_consistent() -> None:
    figures = load_bench().gap_report_figures(entities=200, files=2_000, events=500)
    assert figures["entities"] == 200
    assert figures["live_equals_full"] is True
    assert 0 < figures["event_p50_ms"] <= figures["event_p99_ms"] <= figures["event_max_ms"]
    assert 0 < figures["completeness_percent"] < 100
    assert figures["checks"][0].target.met(figures["event_p99_ms"], None) is True


def test_rule_coverage_bench_maps_generated_trees_and_lists_strays() -> None:
    figures = load_bench().rule_coverage_figures(scale=60)
    checks = figures.pop("checks")
    assert set(figures) == {"characters", "films-series", "flat"}
    assert [c.value for c in checks] == [100.0 * figures[n]["share"] for n in sorted(figures)]
    for name, f in figures.items():
        assert f["share_ok"], (name, f["unmapped"])
        assert f["files"] - f["mapped"] == len(f["unmapped"])
        assert sum(f["unmapped_by_folder"].values()) == len(f["unmapped"])
