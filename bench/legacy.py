"""Legacy catalog benchmarks (issue 17): `importctl migrate-legacy` on an old SQLite catalog made
here, and its backlog's hashing beside b3sum.

  1. migration of 100,000 rows (10,000 with --quick) whose files are all catalogued (the
     backlog excluded): preview and commit in rows/s, beside reading the same rows out of the old
     catalog alone (the same query, in a fresh Python); and the daemon's peak RSS during each,
     beside the same on a catalog a quarter that size: streamed, it must not grow with the old
     catalog (a preview under 16 MiB, a commit under 48 MiB: the catalog writer's page cache,
     32 MiB at most, fills as it writes; the peak is reset through /proc/PID/clear_refs before
     each call).
  2. the backlog: files on a polled root between polls (not catalogued), committed to the
     backlog paused, then resumed and timed to `done`, beside `find | xargs b3sum` on the same
     files (warm page cache on both sides).

Called by `python -m bench` through its `bench_*` functions (section `legacy`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.core import (
    BenchError,
    DaemonRun,
    RootSpec,
    find_importd,
    load_average,
    make_big_file,
    make_tree,
    timed_shell,
    wait_past_settle,
    wait_roots_idle,
    warm,
)
from bench.maintenance import find_importctl, registered_daemon
from bench.report import INFO, Check, Target, median

SETTLE_SECONDS = 1.0
MIB = 1 << 20
# Streamed, the peak is a batch's worth (1,000 rows) whatever the old catalog's size: a few MiB
# of allocator noise, never the 100,000 rows (tens of MiB as Python objects).
RSS_TARGET = Target("value_at_most", 16)
# A commit also fills the catalog writer's page cache (PRAGMA cache_size: 32 MiB), which is
# bounded by that setting, not by the old catalog: the same 16 MiB on top of it.
COMMIT_RSS_TARGET = Target("value_at_most", 48)
MAPPING = """
[files]
table = "models"
id = "id"
path = "path"
hash = "hash"
hash_algorithm = "blake3"
name = "name"
[files.attributes]
rating = "rating"
[tags]
table = "tags"
id = "id"
name = "name"
color = "color"
[tags.links]
table = "model_tags"
file = "model_id"
tag = "tag_id"
"""
# The reference: the same rows read out of the old catalog, and nothing else.
READ_ONLY = """
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
cur = conn.execute(
    "SELECT f.id, f.path, f.hash, f.name, f.rating, l.tag_id FROM models AS f"
    " LEFT JOIN model_tags AS l ON l.model_id = f.id ORDER BY f.id"
)
n = 0
while rows := cur.fetchmany(1000):
    n += len(rows)
print(n)
"""


def legacy_catalog(path: Path, places: list[tuple[str, str | None]], tags: int = 50) -> None:
    """`models(id, path, hash, name, rating)`, `tags`, one tag link per row; every other row
    without its hash (matched by path)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE models (id INTEGER PRIMARY KEY, path TEXT, hash TEXT, name TEXT, rating INTEGER);"
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, color TEXT);"
        "CREATE TABLE model_tags (model_id INTEGER, tag_id INTEGER);"
    )
    conn.executemany(
        "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
        ((i + 1, p, h if i % 2 == 0 else None, f"model {i}", i % 5) for i, (p, h) in enumerate(places)),
    )
    conn.executemany(
        "INSERT INTO tags VALUES (?, ?, ?)", ((t, f"tag {t}", f"#{t:06x}") for t in range(1, tags + 1))
    )
    conn.executemany(
        "INSERT INTO model_tags VALUES (?, ?)", ((i + 1, i % tags + 1) for i in range(len(places)))
    )
    conn.commit()
    conn.close()


def _catalogued(daemon: DaemonRun, root: Path) -> list[tuple[str, str | None]]:
    conn = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT relpath, blake3 FROM files WHERE status = 'present' ORDER BY id")
        return [(os.fsdecode(os.fsencode(root) + b"/" + bytes(rel)), digest) for rel, digest in rows]
    finally:
        conn.close()


def _reset_peak(pid: int) -> None:
    """VmHWM back to VmRSS (Linux 4.0+), so the next peak is this call's."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _migrate(importctl: Path, daemon: DaemonRun, db: Path, mapping: Path, commit: bool) -> dict[str, Any]:
    _reset_peak(daemon.pid)
    rss0 = daemon.memory()["VmRSS"]
    argv = [
        str(importctl),
        "--socket",
        str(daemon.socket),
        "migrate-legacy",
        str(db),
        "--mapping",
        str(mapping),
    ]
    argv += ["--json", "--limit", "0"] + (["--commit"] if commit else [])
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise BenchError(f"migrate-legacy exited {done.returncode}: {done.stderr.decode()[-300:]}")
    reply = json.loads(done.stdout)
    mem = daemon.memory()
    return {"wall_s": wall, "totals": reply["totals"], "peak_growth_mib": (mem["VmHWM"] - rss0) / 1024}


def _read_alone(db: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", READ_ONLY, str(db)], check=True, capture_output=True)
    return time.perf_counter() - start


def bench_legacy_migration(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Preview and commit of a 100,000-row legacy catalog (files all catalogued) vs reading it."""
    rows = 10_000 if quick else 100_000
    root = work_dir / "legacy" / "root"
    tree = make_tree(root, rows, max(1, rows // 100), 256)
    os.sync()
    wait_past_settle(tree.sample, SETTLE_SECONDS)
    importctl = find_importctl()
    mapping = work_dir / "legacy" / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    daemon = registered_daemon(work_dir / "legacy" / "daemon", "legacy", root, tree.files)
    try:
        # The first import is followed by a second, stat-only reconcile behind the watch: wait
        # for it, so the migration is measured alone.
        wait_roots_idle(daemon, timeout=600)
        places = _catalogued(daemon, root)
        full, quarter = work_dir / "legacy" / "full.db", work_dir / "legacy" / "quarter.db"
        legacy_catalog(full, places)
        legacy_catalog(quarter, places[: len(places) // 4])
        read_s = median([_read_alone(full) for _ in range(3)])
        small = {"preview": _migrate(importctl, daemon, quarter, mapping, False)}
        big = {"preview": _migrate(importctl, daemon, full, mapping, False)}
        small["commit"] = _migrate(importctl, daemon, quarter, mapping, True)
        big["commit"] = _migrate(importctl, daemon, full, mapping, True)
    finally:
        daemon.stop()
    for run in (big["preview"], big["commit"]):
        if run["totals"]["link"] != len(places):
            raise BenchError(f"expected {len(places)} rows linked, got {run['totals']}")
    n = len(places)
    quarter_rows = f"{n // 4:,} rows"
    checks = [
        Check(f"legacy preview, {n:,} rows (catalogued files)", n / big["preview"]["wall_s"], "rows/s",
              INFO, n / read_s, "the rows read alone"),
        Check(f"legacy commit, {n:,} rows", n / big["commit"]["wall_s"], "rows/s",
              INFO, n / read_s, "the rows read alone"),
        Check("  peak RSS growth, preview", big["preview"]["peak_growth_mib"], "MiB",
              RSS_TARGET, small["preview"]["peak_growth_mib"], quarter_rows),
        Check("  peak RSS growth, commit", big["commit"]["peak_growth_mib"], "MiB",
              COMMIT_RSS_TARGET, small["commit"]["peak_growth_mib"], quarter_rows),
    ]  # fmt: skip
    return {
        "rows": n,
        "read_alone_s": round(read_s, 3),
        "full": {
            k: {"wall_s": round(v["wall_s"], 3), "peak_growth_mib": round(v["peak_growth_mib"], 1)}
            for k, v in big.items()
        },
        "quarter": {
            k: {"wall_s": round(v["wall_s"], 3), "peak_growth_mib": round(v["peak_growth_mib"], 1)}
            for k, v in small.items()
        },
        "load_1m": load_average(),
        "checks": checks,
    }


def bench_legacy_backlog(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """The backlog's hashing of files a polled root has not catalogued yet, vs b3sum."""
    files, size = (50, 4 * MIB) if quick else (200, 4 * MIB)
    home = work_dir / "backlog"
    live, late = home / "live", home / "late"
    live.mkdir(parents=True)
    late.mkdir(parents=True)
    daemon = DaemonRun(
        find_importd(),
        home / "daemon",
        [RootSpec("live", live), RootSpec("late", late, watch="poll", poll_interval_s=86400)],
        SETTLE_SECONDS,
    )
    daemon.start()
    importctl = find_importctl()
    try:
        daemon.wait_ready()
        daemon.wait_reconciled("late", timeout=120)
        paths = [late / f"reel{i // 20:02d}" / f"take{i:04d}.mov" for i in range(files)]
        for i, path in enumerate(paths):
            make_big_file(path, size, seed=500 + i)
        os.sync()
        db, mapping = home / "old.db", home / "mapping.toml"
        legacy_catalog(db, [(str(p), None) for p in paths])
        mapping.write_text(MAPPING, encoding="utf-8")
        ctl = [str(importctl), "--socket", str(daemon.socket)]
        subprocess.run([*ctl, "pause", "migration"], check=True, capture_output=True)
        subprocess.run(
            [*ctl, "migrate-legacy", str(db), "--mapping", str(mapping), "--commit"],
            check=True,
            capture_output=True,
        )
        warm(late)
        script = 'find "$1" -type f -print0 | xargs -0 b3sum > /dev/null'
        timed_shell(script, str(late))
        b3sum = [timed_shell(script, str(late)).wall for _ in range(3)]
        start = time.perf_counter()
        subprocess.run([*ctl, "resume", "migration"], check=True, capture_output=True)
        while True:
            mig = daemon.status()["migration"]
            if mig["state"] == "done":
                break
            if time.perf_counter() - start > 600:
                raise BenchError(f"the backlog did not finish: {mig}")
            time.sleep(0.05)
        backlog_s = time.perf_counter() - start
    finally:
        daemon.stop()
    if mig["done"] != files:
        raise BenchError(f"backlog ended {mig}, expected {files} done")
    mib = files * size / MIB
    b3sum_s = median(b3sum)
    checks = [
        Check(f"legacy backlog hashing, {files} x {size // MIB} MiB", mib / backlog_s, "MiB/s",
              INFO, mib / b3sum_s, "b3sum"),
    ]  # fmt: skip
    return {
        "files": files,
        "bytes": files * size,
        "backlog_s": round(backlog_s, 3),
        "backlog_files_per_s": round(files / backlog_s, 1),
        "b3sum_s": [round(s, 3) for s in b3sum],
        "load_1m": load_average(),
        "checks": checks,
    }


__all__ = ["bench_legacy_backlog", "bench_legacy_migration"]
