"""Export, restore and backup (issue 18), on catalogs of two sizes made here.

A catalog of N files (20,000 and 100,000; 2,000 and 10,000 with --quick) is written straight into
a new SQLite file (contents, files with raw-byte names, entities and their links, runs with logs,
extractions, perceptual hashes, faces with 2 KiB embeddings), then served by a real daemon whose
only configured root is empty, so nothing changes the catalog while it is measured. Per size:

  - `importctl export --out FILE`: rows/s, beside `sqlite3 catalog.db .dump` on the same file;
    the daemon's peak RSS above its RSS before the export (sampled every 10 ms), and importctl's
    own peak RSS: the point is that neither grows with the catalog;
  - `importd import-dump FILE --catalog new.db`: rows/s and peak RSS, beside `sqlite3 new.db <
    dump.sql` (the restore of sqlite3's own dump);
  - `importctl backup --out FILE`: seconds, beside `sqlite3 catalog.db ".backup FILE"`.
"""

from __future__ import annotations

import json
import random
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.core import BenchError, DaemonRun, RootSpec, find_importd, timed_shell
from bench.report import INFO, Check, Target

MIB = 1 << 20


def _importctl() -> Path:
    here = Path(sys.executable).parent / "importctl"
    if not here.exists():
        raise BenchError(f"importctl not found next to {sys.executable} (run `make install`)")
    return here


def make_catalog(db: Path, files: int, seed: int = 18) -> int:
    """A migrated catalog with `files` files and what hangs off them; returns its row count."""
    import anyio

    from importd.catalog.engine import create_engine, migrate

    async def schema() -> None:
        engine = create_engine(f"sqlite:///{db}")
        await migrate(engine)
        await engine.dispose()

    anyio.run(schema)
    rnd = random.Random(seed)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys=OFF")
    now = 1_790_000_000.0
    digests = [rnd.getrandbits(256).to_bytes(32, "big").hex() for _ in range(files)]
    conn.execute("INSERT INTO roots (id, name, path) VALUES (1, 'synthetic', '/srv/synthetic')")
    conn.executemany(
        "INSERT INTO contents (blake3, size, first_seen) VALUES (?, ?, ?)",
        ((d, rnd.randrange(1 << 30), now + i / 7) for i, d in enumerate(digests)),
    )
    conn.executemany(
        "INSERT INTO files (id, root_id, relpath, display_path, size, mtime_ns, inode, dev, blake3, status,"
        " first_seen, last_seen) VALUES (?, 1, ?, ?, ?, ?, ?, 2049, ?, 'present', ?, ?)",
        (
            (i + 1, rel, repr(rel)[2:-1], rnd.randrange(1 << 30),
             1_790_000_000_000_000_000 + i, 1000 + i, d, now + i / 7, now + i / 3)
            for i, d in enumerate(digests)
            for rel in [f"char{i // 10:05d}/scene \xe9{i}.mp4".encode("latin-1")]
        ),
    )  # fmt: skip
    entities = max(1, files // 10)
    conn.executemany(
        "INSERT INTO entities (id, type, key, name, attributes, first_seen, updated)"
        " VALUES (?, 'character', ?, ?, ?, ?, ?)",
        (
            (e + 1, f"char{e:05d}", f"Char {e}", json.dumps({"age": e % 90}), now, now)
            for e in range(entities)
        ),
    )
    conn.executemany(
        "INSERT INTO entity_files (file_id, entity_id, root_id, rule_index, role, link_attributes,"
        " pre_approved, mapped_at) VALUES (?, ?, 1, 0, 'scene', '{}', 0, ?)",
        ((i + 1, min(entities, i // 10 + 1), now) for i in range(files)),
    )
    conn.executemany(
        "INSERT INTO runs (id, kind, trigger, root_id, status, started, finished, files_seen, changed,"
        " vanished, errors, gap_report)"
        " VALUES (?, 'reconcile', 'startup', 1, 'completed', ?, ?, 0, 0, 0, 0, ?)",
        ((r + 1, now + r, now + r + 1, json.dumps({"entities": [], "run": r})) for r in range(10)),
    )
    conn.executemany(
        "INSERT INTO run_log (run_id, entity_id, entity, action, detail, at)"
        " VALUES (?, ?, ?, 'created', NULL, ?)",
        ((e % 10 + 1, e + 1, f"character:Char {e}", now) for e in range(entities)),
    )
    conn.executemany(
        "INSERT INTO extractions (blake3, extractor, version, status, facts, at, cpu_s) VALUES"
        " (?, 'image', 1, 'ok', ?, ?, ?)",
        ((d, json.dumps({"width": 1920, "height": 1080, "format": "JPEG"}), now, 0.01) for d in digests[::2]),
    )
    conn.executemany(
        "INSERT INTO image_hashes (blake3, phash, dhash, low_detail) VALUES (?, ?, ?, 0)",
        ((d, rnd.getrandbits(64) - (1 << 63), rnd.getrandbits(64) - (1 << 63)) for d in digests[::2]),
    )
    embedding = struct.pack("<512f", *(rnd.random() for _ in range(512)))
    conn.executemany(
        "INSERT INTO faces (blake3, idx, x1, y1, x2, y2, det_score, embedding)"
        " VALUES (?, 0, 1, 2, 3, 4, 0.9, ?)",
        ((d, embedding) for d in digests[::20]),
    )
    conn.commit()
    total = sum(
        conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'"
        )
    )
    conn.close()
    return int(total)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _PeakRss:
    """Samples a process's RSS every 10 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_kib(self.pid))

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _settled_rss(pid: int, window_s: float = 3.0, timeout_s: float = 60.0) -> int:
    """The process's RSS once it has moved less than 512 KiB over `window_s`."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        samples = [(t, r) for t, r in samples if now - t <= window_s] + [(now, _rss_kib(pid))]
        rss = [r for _, r in samples]
        if now - samples[0][0] >= window_s * 0.9 and max(rss) - min(rss) < 512:
            return rss[-1]
        time.sleep(0.2)
    return samples[-1][1]


def _exporter_alone(db: Path) -> int:
    """Peak RSS (KiB) of a process that only imports the exporter and runs it over `db`: the dump's
    own memory, apart from the daemon's."""
    script = (
        "import resource, sys\n"
        "from importd.catalog.dump import DumpSource, chunks_of, sqlite_lines\n"
        "with open(os.devnull, 'w') as out:\n"
        "    for piece in chunks_of(sqlite_lines(sys.argv[1], DumpSource('bench', 0.0)), 1 << 20):\n"
        "        out.write(piece)\n"
    )
    _, peak, _ = _run_measured([sys.executable, "-c", "import os\n" + script, str(db)])
    return peak


# The measured command runs as the child of this small process, which reports its peak RSS.
# Measured directly, a child's ru_maxrss also holds the RSS of the process it was forked from
# (Linux keeps the old image's high-water mark across exec): the bench's own, some 75 MiB once it
# has made the big catalog, which was then read as importctl's.
_WRAPPER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\nmaxrss_kib={usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, the command's own peak RSS (KiB) and its stdout."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, check=False)
    wall = time.perf_counter() - start
    err = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise BenchError(f"{cmd[0]} {cmd[1]} failed ({done.returncode}): {err[-300:]}")
    peak = int(err.rsplit("maxrss_kib=", 1)[1].split()[0])
    return wall, peak, done.stdout.decode()


def _one_size(work: Path, files: int) -> dict[str, Any]:
    home = work / f"n{files}"
    empty = home / "empty-root"
    empty.mkdir(parents=True)
    daemon = DaemonRun(find_importd(), home / "daemon", [RootSpec("empty", empty)], 1.0)
    daemon.state.mkdir(parents=True)
    start = time.perf_counter()
    rows = make_catalog(daemon.db, files)
    make_s = time.perf_counter() - start
    importctl = str(_importctl())
    dump = home / "catalog.jsonl"
    daemon.start()
    try:
        daemon.wait_ready()
        pid = daemon.pid
        # What the daemon does at start on a big catalog (the gap report, the media stage's
        # resume) must be over, or its growth is counted as the export's.
        before = _settled_rss(pid)
        with _PeakRss(pid) as peak:
            export_s, ctl_rss, out = _run_measured(
                [
                    importctl,
                    "--socket",
                    str(daemon.socket),
                    "--timeout",
                    "60",
                    "export",
                    "--out",
                    str(dump),
                    "--json",
                ]
            )
        exported = json.loads(out)
        backup_s, _, _ = _run_measured(
            [
                importctl,
                "--socket",
                str(daemon.socket),
                "--timeout",
                "60",
                "backup",
                "--out",
                str(home / "b.db"),
            ]
        )
    finally:
        daemon.stop()
    dumped = sum(exported["rows"].values())
    if not rows <= dumped <= rows + 10:  # the daemon's start adds its root and a run or two
        raise BenchError(f"the export holds {dumped} rows, the catalog {rows}")
    rows = dumped
    ref_dump = timed_shell('sqlite3 "$1" .dump > "$2"', str(daemon.db), str(home / "dump.sql"))
    ref_restore = timed_shell('sqlite3 "$1" < "$2"', str(home / "ref.db"), str(home / "dump.sql"))
    ref_backup = timed_shell('sqlite3 "$1" ".backup $2"', str(daemon.db), str(home / "ref-backup.db"))
    alone_rss = _exporter_alone(daemon.db)
    restore_s, restore_rss, _ = _run_measured(
        [str(find_importd()), "import-dump", str(dump), "--catalog", str(home / "restored.db")]
    )
    return {
        "files": files,
        "rows": rows,
        "make_catalog_s": round(make_s, 2),
        "catalog_mib": round(daemon.db.stat().st_size / MIB, 1),
        "dump_mib": round(exported["bytes"] / MIB, 1),
        "export_s": round(export_s, 3),
        "export_rows_per_s": round(rows / export_s),
        "daemon_rss_before_mib": round(before / 1024, 1),
        "daemon_rss_growth_mib": round((peak.peak - before) / 1024, 1),
        "importctl_peak_rss_mib": round(ctl_rss / 1024, 1),
        "exporter_alone_peak_rss_mib": round(alone_rss / 1024, 1),
        "sqlite3_dump_s": round(ref_dump.wall, 3),
        "import_dump_s": round(restore_s, 3),
        "import_dump_rows_per_s": round(rows / restore_s),
        "import_dump_peak_rss_mib": round(restore_rss / 1024, 1),
        "sqlite3_restore_s": round(ref_restore.wall, 3),
        "backup_s": round(backup_s, 3),
        "sqlite3_backup_s": round(ref_backup.wall, 3),
    }


def bench_export(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Export, import-dump and backup at two catalog sizes, beside sqlite3's .dump, restore, .backup."""
    sizes = (2_000, 10_000) if quick else (20_000, 100_000)
    runs = [_one_size(work_dir, n) for n in sizes]
    checks: list[Check] = []
    for r in runs:
        n = f"{r['files']:,} files, {r['rows']:,} rows"
        checks += [
            Check(f"export {n} (rows/s)", r["export_rows_per_s"], "rows/s", INFO,
                  r["rows"] / r["sqlite3_dump_s"], "sqlite3 .dump"),
            Check("  daemon peak RSS above its RSS before the export", r["daemon_rss_growth_mib"], "MiB",
                  Target("value_at_most", 64)),
            Check("  importctl export peak RSS", r["importctl_peak_rss_mib"], "MiB",
                  Target("value_at_most", 100)),
            Check("  the exporter alone (a process running only catalog/dump.py), peak RSS",
                  r["exporter_alone_peak_rss_mib"], "MiB", INFO),
            Check(f"import-dump {n} (rows/s)", r["import_dump_rows_per_s"], "rows/s", INFO,
                  r["rows"] / r["sqlite3_restore_s"], "sqlite3 < dump.sql"),
            Check("  import-dump peak RSS", r["import_dump_peak_rss_mib"], "MiB", INFO),
            Check(f"backup {r['catalog_mib']} MiB catalog (s)", r["backup_s"], "s", INFO,
                  r["sqlite3_backup_s"], "sqlite3 .backup"),
        ]  # fmt: skip
    small, big = runs
    for key, what in (
        ("daemon_rss_growth_mib", "daemon RSS growth during export"),
        ("importctl_peak_rss_mib", "importctl export peak RSS"),
        ("exporter_alone_peak_rss_mib", "the exporter alone, peak RSS"),
    ):
        checks.append(
            Check(f"{what}, {big['files']:,} vs {small['files']:,} files", big[key], "MiB",
                  Target("ratio_at_most", 1.5), small[key] or None, f"{small['files']:,} files")
        )  # fmt: skip
    return {"sizes": runs, "checks": checks}
