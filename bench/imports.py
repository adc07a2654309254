"""Benchmarks for bringing old metadata in. The CSV half (`csv_*`) first; the legacy catalog's
half follows.

`csv_figures()`: `import-csv` of a generated spreadsheet (accents, quoted cells with commas and
newlines, an int, a day-first date and an enum checked by `[fields]` rules) of 10,000 and
50,000 rows (2,000 and 10,000 with --quick), each on a fresh daemon: the preview, then the
commit that creates every entity. Rows per second beside Python's `csv` module reading the same
file (the floor of any CSV reader written in Python), and the daemon's peak RSS (VmHWM) for
each size: the file is streamed, so the larger file's preview peak must stay that of the
smaller one (the keys already seen, about 120 bytes a row, are all that grows). A commit adds
every row's entity to the catalog and to the live gap report, which the daemon holds whatever
brought them in: its peak is shown beside the RSS of the daemon restarted on that catalog.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

from bench.core import DaemonRun, RootSpec, _mb, find_importd
from bench.report import INFO, Check, Target

__all__ = ["csv_figures"]

CSV_FIELDS = """
[fields.character.age]
type = "int"
min = 0
max = 150

[fields.character.born]
type = "date"
dayfirst = true

[fields.character.eyes]
type = "enum"
values = ["blue", "green", "brown", "grey"]
"""
CSV_MAP = [("Nom", "name"), ("Âge", "age"), ("Né le", "born"), ("Yeux", "eyes"), ("Notes", "notes")]
_FIRST = ["Élodie", "Zoé", "Amélie", "Jérôme", "Noël", "Hélène", "François", "Anaïs", "Loïc", "Maëlle"]
_LAST = ["Martin", "Lefèvre", "Girard", "Dupré", "Rousseau", "Bérénice", "Faure", "Chevalier"]


class _CsvDaemon(DaemonRun):
    """A daemon with the `[fields]` rules the generated spreadsheet is checked by."""

    def write_config(self) -> None:
        super().write_config()
        with open(self.config, "a", encoding="utf-8") as fh:
            fh.write(CSV_FIELDS)


def csv_write_sheet(path: Path, rows: int, seed: int = 17) -> int:
    """A spreadsheet export of `rows` characters, `;`-separated as French Excel writes it."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh, delimiter=";")
        out.writerow([column for column, _ in CSV_MAP])
        for i in range(rows):
            notes = rng.choice(["", "aime le thé; et les gâteaux", "deux\nlignes", 'dit "bonjour"', "calme"])
            out.writerow(
                [
                    f"{rng.choice(_FIRST)} {rng.choice(_LAST)} {i}",
                    rng.randint(18, 90),
                    f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1940, 2005)}",
                    rng.choice(["blue", "Green", "brown", "grey"]),
                    notes,
                ]
            )
    return path.stat().st_size


def csv_python_reader_seconds(path: Path) -> float:
    """The reference: Python's csv module streaming the same file, doing nothing with the rows."""
    start = time.perf_counter()
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for _ in csv.reader(fh, delimiter=";"):
            pass
    return time.perf_counter() - start


def _csv_one_size(work_dir: Path, rows: int) -> dict[str, Any]:
    sheet = work_dir / f"sheet{rows}" / "characters.csv"
    size = csv_write_sheet(sheet, rows)
    reference = min(csv_python_reader_seconds(sheet) for _ in range(3))
    root = work_dir / f"sheet{rows}" / "root"
    root.mkdir(exist_ok=True)
    home = work_dir / f"sheet{rows}" / "daemon"
    with _CsvDaemon(find_importd(), home, [RootSpec("empty", root)], 0.5) as daemon:
        daemon.wait_ready()
        client = daemon.client()
        idle = daemon.memory()
        start = time.perf_counter()
        preview = client.import_csv(str(sheet), "character", "name", CSV_MAP, limit=0)
        preview_s = time.perf_counter() - start
        after_preview = daemon.memory()
        start = time.perf_counter()
        commit = client.import_csv(
            str(sheet), "character", "name", CSV_MAP, create=True, commit=True, limit=0
        )
        commit_s = time.perf_counter() - start
        after_commit = daemon.memory()
        gaps_equal = client.gaps() == client.gaps(recompute=True)
        start = time.perf_counter()
        again = client.import_csv(str(sheet), "character", "name", CSV_MAP, limit=0)
        again_s = time.perf_counter() - start
        after_again = daemon.memory()
    # What a daemon holding the catalog the commit made needs anyway (its live gap report holds
    # every entity): the commit's peak is judged beside it, not beside an empty catalog.
    with _CsvDaemon(find_importd(), home, [RootSpec("empty", root)], 0.5) as restarted:
        restarted.wait_ready()
        restarted.status()
        holding = restarted.memory()
    return {
        "rows": rows,
        "restarted_rss_kb": holding["VmRSS"],
        "bytes": size,
        "python_csv_s": round(reference, 3),
        "preview_s": round(preview_s, 3),
        "commit_s": round(commit_s, 3),
        "preview_totals": preview["totals"],
        "commit_totals": commit["totals"],
        "idle_rss_kb": idle["VmRSS"],
        "peak_after_preview_kb": after_preview["VmHWM"],
        "peak_after_commit_kb": after_commit["VmHWM"],
        "preview_again_s": round(again_s, 3),
        "preview_again_totals": again["totals"],
        "peak_after_preview_again_kb": after_again["VmHWM"],
        "gaps_equal_recompute": gaps_equal,
    }


def csv_figures(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    small_rows, large_rows = (2_000, 10_000) if quick else (10_000, 50_000)
    small = _csv_one_size(work_dir, small_rows)
    large = _csv_one_size(work_dir, large_rows)
    n = large["rows"]
    checks = [
        Check(f"CSV preview (every row unmatched), {n:,} rows", round(n / large["preview_s"]), "rows/s", INFO,
              round(n / large["python_csv_s"]), "python csv.reader, same file"),
        Check(f"CSV preview again (every row unchanged), {n:,} rows", round(n / large["preview_again_s"]),
              "rows/s", INFO, round(n / large["python_csv_s"]), "python csv.reader, same file"),
        Check(f"CSV commit (--create), {n:,} rows", round(n / large["commit_s"]), "rows/s", INFO,
              round(n / large["python_csv_s"]), "python csv.reader, same file"),
        Check(f"  daemon peak RSS after preview, {n:,} rows", _mb(large["peak_after_preview_kb"]), "MB",
              Target("ratio_at_most", 1.15), _mb(small["peak_after_preview_kb"]), f"{small['rows']:,} rows"),
        Check(f"  daemon peak RSS during the commit, {n:,} rows", _mb(large["peak_after_commit_kb"]), "MB",
              INFO, _mb(small["peak_after_commit_kb"]), f"{small['rows']:,} rows",
              "the writer's SQLite page cache (32 MiB at most) fills as the catalog grows"),
        Check(f"  daemon RSS restarted on the catalog of {n:,} rows", _mb(large["restarted_rss_kb"]), "MB",
              INFO, _mb(small["restarted_rss_kb"]), f"{small['rows']:,} rows"),
        Check("  gaps == gaps --recompute after the commit", float(small["gaps_equal_recompute"]
              and large["gaps_equal_recompute"]), "", INFO),
    ]  # fmt: skip
    return {"small": small, "large": large, "checks": checks}
