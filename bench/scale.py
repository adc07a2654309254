"""The scale section (issue 21): the real daemon on a generated legacy tree of 1,000,000 files.

The tree is `make bench-tree`'s (tools/bench_tree.py: deep and wide folders, tiny files, a few
huge ones, duplicates, symlink farms, names that are not UTF-8, a characters tree and a
films/series tree with their path rules), reused when one with the same parameters exists.
In one run, each figure beside its reference:

  1. cold registration of the whole tree on a fresh state dir vs `find | xargs -0 b3sum`;
  2. restart with nothing changed (stopped, started again, until its start-up reconcile is
     done), median of 3, vs `find -printf`;
  3. the daemon's RSS (VmRSS when idle, VmHWM) after the cold import and after the restart;
  4. the catalog's size per file;
  5. `status`, `gaps`, `find` (by path, by hash) and `dupes` latency in the client, with the
     catalog full and the daemon hashing new files written meanwhile by another process;
  6. a soak: a steady stream of changes for --soak-minutes, the daemon's RSS sampled throughout.

What the bench adds under the root (`_load/`, `_soak/`) is removed at the end (and at the start,
after a run that was interrupted), so the tree stays the generator's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.core import (
    BenchError,
    DaemonRun,
    b3sum_digest,
    find_importd,
    load_average,
    startup_scan_seconds,
    timed_shell,
    wait_past_settle,
    wait_registered,
    wait_roots_idle,
    warm,
    warm_daemon_code,
)
from bench.report import INFO, Check, Target, median, percentile

TOOLS = Path(__file__).resolve().parents[1] / "tools"
ROOT_NAME = "bench"  # tools/bench_tree.py's root
LOAD_DIR = "_load"
SOAK_DIR = "_soak"
RSS_TARGET_MB = 300.0
STATUS_P99_MS = 50.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tool(name: str) -> ModuleType:
    """A module of tools/ (scripts, not a package), loaded once by its path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ScaleOptions:
    work: Path
    importd: Path
    files: int
    soak_minutes: float
    tree_base: Path | None = None  # default: tools/bench_tree.py's place for this many files
    huge: int = 3
    huge_mib: int = 256
    restarts: int = 3
    settle_seconds: float = 1.0
    load_rate: float = 1000.0  # new files per second while the latency is measured
    rounds: int = 30  # of the latency measurement (status calls, a find of each kind, gaps, ...)
    latency_s: float = 60.0  # at most, with the load (a third of it without)
    soak_rate: float = 4.0  # changes per second
    soak_sample_s: float = 10.0

    @classmethod
    def of(
        cls, work: Path, quick: bool, files: int | None, soak_minutes: float | None, tree: Path | None
    ) -> ScaleOptions:
        n = files or (20_000 if quick else 1_000_000)
        return cls(
            work=work,
            importd=find_importd(),
            files=n,
            soak_minutes=soak_minutes if soak_minutes is not None else (1.0 if quick else 30.0),
            tree_base=tree,
            huge_mib=32 if n < 200_000 else 256,
            load_rate=500.0 if n < 200_000 else 1000.0,
            rounds=10 if quick else 30,
            latency_s=15.0 if quick else 60.0,
            soak_sample_s=2.0 if quick else 10.0,
        )


class ScaleDaemon(DaemonRun):
    """The bench's daemon with the tree's own config fragment (its root, rules, expectations).
    Media extraction is off: the tree's videos are random bytes, and this section measures the
    catalog at scale, not the extractors (bench/camera.py and bench/media.py do)."""

    def __init__(self, importd: Path, home: Path, fragment: str, settle_seconds: float) -> None:
        super().__init__(importd, home, [], settle_seconds)
        self.fragment = fragment

    def write_config(self) -> None:
        super().write_config()
        with open(self.config, "a", encoding="utf-8") as fh:
            fh.write("[media]\nenabled = false\n" + self.fragment)


def mb(kb: int) -> float:
    return kb * 1024 / 1e6


def _dist(values_ms: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50": round(percentile(values_ms, 50), 2),
        "p99": round(percentile(values_ms, 99), 2),
        "max": round(max(values_ms), 2),
    }


def pair_checks(label: str, busy: Sequence[float], idle: Sequence[float], note: str = "") -> list[Check]:
    """p50 and p99 of one query while hashing, beside the same without load."""
    return [
        Check(f"{label}: p50", percentile(busy, 50), "ms", INFO, percentile(idle, 50), "idle", note=note),
        Check("  p99", percentile(busy, 99), "ms", INFO, percentile(idle, 99), "idle"),
    ]


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    if len(samples) < 2:
        return 0.0
    ts = [t for t, _ in samples]
    ys = [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var * 3600


def flatness(samples: Sequence[tuple[float, float]], duration_s: float) -> dict[str, float]:
    """First and last medians after a warm-up (a tenth of the run, at most 3 minutes), each over a
    sixth of the run (at most 5 minutes), and the slope of everything after the warm-up."""
    warmup = min(180.0, duration_s / 10)
    window = min(300.0, duration_s / 6)
    kept = [(t, y) for t, y in samples if t >= warmup]
    if not kept:
        raise BenchError("no RSS sample after the soak's warm-up")
    end = kept[-1][0]
    first = [y for t, y in kept if t <= warmup + window] or [kept[0][1]]
    last = [y for t, y in kept if t >= end - window] or [kept[-1][1]]
    return {
        "warmup_s": warmup,
        "window_s": window,
        "first_mb": round(median(first), 2),
        "last_mb": round(median(last), 2),
        "growth_mb": round(median(last) - median(first), 2),
        "slope_mb_per_h": round(slope_per_hour(kept), 2),
    }


# ----- other processes: the load and the soak's changes -------------------------------------------


def write_load(root: str, rate: float, stop: Any) -> None:
    """New files at `rate` per second (4-64 KiB, 500 to a folder) and a 64 MiB file every 3 s,
    until `stop` is set: the daemon hashes throughout. A process of its own, so the client timed
    in the bench's process never waits for this one's GIL."""
    rng = random.Random(5)
    block = rng.randbytes(64 << 20)
    base = os.path.join(root, LOAD_DIR)
    n = 0
    started = time.monotonic()
    next_big = started
    while not stop.is_set():
        folder = os.path.join(base, f"batch{n // 500:05d}")
        os.makedirs(folder, exist_ok=True)
        for _ in range(max(1, int(rate / 10))):
            size = rng.randint(4 << 10, 64 << 10)
            offset = rng.randrange(len(block) - size)
            with open(os.path.join(folder, f"new{n:07d}.bin"), "wb") as fh:
                fh.write(n.to_bytes(8, "little") + block[offset : offset + size])
            n += 1
        now = time.monotonic()
        if now >= next_big:
            with open(os.path.join(base, f"big{n:07d}.bin"), "wb") as fh:
                fh.write(n.to_bytes(8, "little") + block)
            next_big = now + 3.0
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def soak_changes(root: str, rate: float, seed: int, stop: Any, count: Any) -> None:
    """tools/crash.py's random changes (creates, appends, renames, folder renames, moves,
    deletes) in a tree of its own under the root, `rate` per second, until `stop` is set."""
    crash = tool("crash")
    tree = crash.Tree(Path(root) / SOAK_DIR, random.Random(seed))
    tree.generate(400)
    started = time.monotonic()
    done = 0
    while not stop.is_set():
        tree.change()
        done += 1
        count.value = done
        delay = started + done / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# ----- the section ---------------------------------------------------------------------------------


@dataclass
class ScaleReport:
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class ScaleBench:
    def __init__(self, opts: ScaleOptions) -> None:
        self.opts = opts
        self.report = ScaleReport()
        self.summary: Any = None
        self.root = Path()
        self.fragment = ""
        self.daemon: ScaleDaemon | None = None
        self.home = opts.work / "daemon"
        self.mp = multiprocessing.get_context("spawn")

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        load = load_average()
        say(f"scale: {name} (load average {load}) ...")
        try:
            yield
        except Exception as exc:
            self.report.failures[name] = f"{type(exc).__name__}: {exc}"
            say(f"scale: {name} FAILED: {type(exc).__name__}: {exc}")
        else:
            say(f"scale: {name} done in {time.perf_counter() - start:.1f}s")
        finally:
            self.report.figures.setdefault("load_average", {})[name] = [load, load_average()]

    def run(self) -> ScaleReport:
        try:
            with self.phase("tree"):
                self.tree()
            if self.summary is not None:
                with self.phase("cold"):
                    self.cold()
                with self.phase("restart"):
                    self.restart()
                if self.daemon is not None:
                    with self.phase("latency"):
                        self.latency()
                    with self.phase("soak"):
                        self.soak()
        finally:
            if self.daemon is not None:
                self.daemon.stop(60)
            if self.summary is not None:
                self.clean_root()
        self.report.notes.extend(NOTES)
        return self.report

    # -- the tree --

    def tree(self) -> None:
        o = self.opts
        bench_tree = tool("bench_tree")
        params = bench_tree.TreeParams(files=o.files, huge=o.huge, huge_mib=o.huge_mib)
        base = o.tree_base or bench_tree.default_base(o.files)
        started = time.perf_counter()
        summary, made = bench_tree.generate(base, params)
        took = time.perf_counter() - started
        self.summary = summary
        self.root = Path(summary.root)
        self.fragment = Path(summary.fragment).read_text(encoding="utf-8")
        self.clean_root()
        if made:
            start = time.perf_counter()
            os.sync()  # the tree's write-back must not run during the measurements
            say(f"scale: generated in {took:.0f}s, synced in {time.perf_counter() - start:.0f}s")
        self.report.figures["tree"] = {
            "base": str(base),
            "reused": not made,
            "generate_s": summary.generate_s,
            **{k: getattr(summary, k) for k in ("files", "catalogued", "bytes", "folders", "duplicates")},
            **{k: getattr(summary, k) for k in ("symlinks", "dangling", "non_utf8", "characters", "films")},
            "episodes": summary.episodes,
        }

    def clean_root(self) -> None:
        for name in (LOAD_DIR, SOAK_DIR):
            shutil.rmtree(self.root / name, ignore_errors=True)

    def new_daemon(self) -> ScaleDaemon:
        return ScaleDaemon(self.opts.importd, self.home, self.fragment, self.opts.settle_seconds)

    def timeout(self) -> float:
        return max(600.0, self.opts.files / 200)

    # -- 1. cold, 3. memory, 4. catalog size --

    def b3sum_tree(self) -> float:
        warm(self.root)
        return timed_shell('find "$1" -type f -print0 | xargs -0 b3sum > /dev/null', str(self.root)).wall

    def cold(self) -> None:
        o, s = self.opts, self.summary
        before = [self.b3sum_tree() for _ in range(2)]
        say(f"scale: find | xargs -0 b3sum: {', '.join(f'{t:.1f}s' for t in before)}")
        warm_daemon_code()
        wait_past_settle([self.root / p for p in s.sample], o.settle_seconds)
        warm(self.root)
        shutil.rmtree(self.home, ignore_errors=True)
        daemon = self.daemon = self.new_daemon()
        daemon.start()
        ready = daemon.wait_ready()

        def progress() -> None:
            st = daemon.status()
            say(
                f"scale: cold: {st['files']['present']:,}/{s.catalogued:,} registered after "
                f"{time.time() - daemon.started_at:.0f}s, queue {st['queue']}, RSS "
                f"{mb(daemon.memory()['VmRSS']):.0f} MB"
            )

        line, match = daemon.wait_reconciled(ROOT_NAME, self.timeout(), progress)
        status, confirmed = wait_registered(daemon, s.catalogued, self.timeout())
        registered_at = confirmed if confirmed is not None else line.at
        at_registered = daemon.memory()
        wait_roots_idle(daemon, self.timeout())
        idle_at = time.time()
        time.sleep(2)  # what the last batches freed is returned
        mem = daemon.memory()
        cpu = daemon.cpu_seconds()
        _, _, scan_s = startup_scan_seconds(daemon, ROOT_NAME)
        mismatched = self.check_digests(daemon)
        catalog = self.catalog_bytes(daemon)
        after = self.b3sum_tree()
        baseline = median([*before, after])
        from_start = registered_at - daemon.started_at
        self.report.figures["cold"] = {
            "baseline_b3sum_s": [round(t, 2) for t in [*before, after]],
            "process_start_to_socket_s": round(ready.at - daemon.started_at, 2),
            "process_start_to_registered_s": round(from_start, 2),
            "process_start_to_idle_s": round(idle_at - daemon.started_at, 2),
            "reconcile_s": round(scan_s if scan_s is not None else float(match["secs"]), 2),
            "present": status["files"]["present"],
            "errors": status["files"]["error"],
            "daemon_cpu_s": cpu,
            "memory_at_registered_kb": at_registered,
            "memory_idle_kb": mem,
            "digest_mismatches_vs_b3sum": mismatched,
            "catalog_bytes": catalog,
        }
        files = s.catalogued
        per_file = (catalog["db"] + catalog["wal"]) / files
        self.report.checks += [
            Check(f"cold registration, {files:,} files: process start -> registered", from_start, "s",
                  Target("ratio_at_most", 2.5), baseline, "find|xargs b3sum"),
            Check("  same, the start-up reconcile alone", self.report.figures["cold"]["reconcile_s"], "s",
                  INFO, baseline, "find|xargs b3sum"),
            Check("  CPU time of the daemon, user+system", round(cpu["user"] + cpu["system"], 1), "s", INFO),
            Check("daemon RSS idle after the cold import (VmRSS)", mb(mem["VmRSS"]), "MB",
                  Target("value_at_most", RSS_TARGET_MB)),
            Check("  peak during the cold import (VmHWM)", mb(mem["VmHWM"]), "MB",
                  Target("value_at_most", RSS_TARGET_MB)),
            Check("catalog size per file (catalog.db + -wal)", round(per_file), "bytes", INFO,
                  note=f"{catalog['db'] / 1e6:.0f} MB + {catalog['wal'] / 1e6:.0f} MB of WAL "
                       f"for {files:,} files"),
        ]  # fmt: skip
        if mismatched:
            self.report.failures["cold_digests"] = f"{mismatched} sampled digests differ from b3sum"

    def check_digests(self, daemon: DaemonRun) -> int:
        client = daemon.client()
        bad = 0
        for rel in self.summary.sample:
            _, expected = b3sum_digest(self.root / rel)
            rows = client.find(str(self.root / rel))
            if not rows or rows[0]["blake3"] != expected:
                bad += 1
        return bad

    @staticmethod
    def catalog_bytes(daemon: DaemonRun) -> dict[str, int]:
        def size(path: Path) -> int:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                return 0

        return {"db": size(daemon.db), "wal": size(Path(f"{daemon.db}-wal"))}

    # -- 2. restart --

    def find_printf(self) -> float:
        warm(self.root)
        return timed_shell("find \"$1\" -printf '%p %s %T@ %i\\n' > /dev/null", str(self.root)).wall

    def restart(self) -> None:
        o = self.opts
        runs: list[dict[str, Any]] = []
        baseline: list[float] = []
        for n in range(o.restarts):
            assert self.daemon is not None
            stop_s = self.daemon.stop(60)
            self.daemon = None
            baseline.append(self.find_printf())
            warm(self.root)
            daemon = self.new_daemon()
            daemon.start()
            daemon.wait_ready()
            line, match = daemon.wait_reconciled(ROOT_NAME, self.timeout())
            self.daemon = daemon
            mem_done = daemon.memory()
            _, _, scan_s = startup_scan_seconds(daemon, ROOT_NAME)
            status = wait_roots_idle(daemon, self.timeout())
            time.sleep(2)
            runs.append(
                {
                    "stop_s": stop_s,
                    "reconcile_s": round(scan_s if scan_s is not None else float(match["secs"]), 3),
                    "process_start_to_reconciled_s": round(line.at - daemon.started_at, 3),
                    "changed": int(match["changed"]),
                    "hashed_files": status["counters"]["hashed_files"],
                    "memory_at_reconciled_kb": mem_done,
                    "memory_idle_kb": daemon.memory(),
                }
            )
            say(f"scale: restart {n + 1}: reconcile {runs[-1]['reconcile_s']:.2f}s, find {baseline[-1]:.2f}s")
        base = median(baseline)
        last = runs[-1]["memory_idle_kb"]
        self.report.figures["restart"] = {"baseline_find_printf_s": baseline, "runs": runs}
        of = f"median of {len(runs)}"
        self.report.checks += [
            Check(f"restart, nothing changed: start-up reconcile ({of})",
                  median([r["reconcile_s"] for r in runs]), "s", Target("ratio_at_most", 1.5), base,
                  "find -printf"),
            Check("  same, process start -> reconcile done", median(
                [r["process_start_to_reconciled_s"] for r in runs]), "s", INFO, base, "find -printf",
                  note="includes interpreter start-up, imports, migrations and placing the watches"),
            Check("  files re-hashed on restart (most of any run)", max(r["hashed_files"] for r in runs),
                  "files", Target("value_at_most", 1)),
            Check("daemon RSS idle after the restart (VmRSS)", mb(last["VmRSS"]), "MB",
                  Target("value_at_most", RSS_TARGET_MB)),
            Check("  peak during the restart (VmHWM, largest run)",
                  mb(max(r["memory_idle_kb"]["VmHWM"] for r in runs)), "MB",
                  Target("value_at_most", RSS_TARGET_MB)),
        ]  # fmt: skip

    # -- 5. latency with the catalog full and the daemon hashing --

    def latency(self) -> None:
        o = self.opts
        daemon = self.daemon
        assert daemon is not None
        client = daemon.client()
        path = str(self.root / self.summary.sample[1])
        _, digest = b3sum_digest(Path(path))
        queries: dict[str, Callable[[], object]] = {
            "status": client.status,
            "find_path": lambda: client.find(path),
            "find_hash": lambda: client.find(digest),
            "gaps": client.gaps,
            "dupes": lambda: client.dupes("exact"),
        }
        for call in queries.values():  # the first call of each warms the daemon's caches
            call()
        idle = self.time_queries(queries, max(3, o.rounds // 3), o.latency_s / 3)
        cli_idle = self.cli_status(5)
        hashed_before = daemon.status()["counters"]
        cpu_before, t_before = daemon.cpu_seconds(), time.monotonic()
        stop = self.mp.Event()
        loader = self.mp.Process(target=write_load, args=(str(self.root), o.load_rate, stop), daemon=True)
        loader.start()
        try:
            time.sleep(3)  # the first new files have settled and are being hashed
            busy = self.time_queries(queries, o.rounds, o.latency_s)
            cli_busy = self.cli_status(5)
        finally:
            stop.set()
            loader.join(30)
        took = time.monotonic() - t_before
        cpu_after = daemon.cpu_seconds()
        status = daemon.status()
        hashed_after = status["counters"]
        cores = (sum(cpu_after.values()) - sum(cpu_before.values())) / took
        files_per_s = (hashed_after["hashed_files"] - hashed_before["hashed_files"]) / took
        mib_per_s = (hashed_after["hashed_bytes"] - hashed_before["hashed_bytes"]) / took / (1 << 20)
        wait_roots_idle(daemon, self.timeout())
        self.report.figures["latency"] = {
            "idle_ms": {k: _dist(v) for k, v in idle.items()},
            "busy_ms": {k: _dist(v) for k, v in busy.items()},
            "importctl_status_cli_s": {"idle": cli_idle, "busy": cli_busy},
            "during_load": {
                "seconds": round(took, 1),
                "daemon_cpu_cores": round(cores, 2),
                "hashed_files_per_s": round(files_per_s),
                "hashed_mib_per_s": round(mib_per_s),
                "load_rate_files_per_s": o.load_rate,
            },
        }
        load = f"{files_per_s:,.0f} files/s, {mib_per_s:,.0f} MiB/s hashed, {cores:.1f} cores"
        self.report.checks += [
            Check("status latency in the client while hashing: p99", percentile(busy["status"], 99), "ms",
                  Target("value_at_most", STATUS_P99_MS), percentile(idle["status"], 99), "idle",
                  note=f"{len(busy['status'])} calls during the load ({load}); the catalog full"),
            Check("  p50", percentile(busy["status"], 50), "ms", INFO,
                  percentile(idle["status"], 50), "idle"),
            Check("  importctl status (CLI, process start included): median", median(cli_busy) * 1000, "ms",
                  INFO, median(cli_idle) * 1000, "idle"),
            *pair_checks("gaps while hashing", busy["gaps"], idle["gaps"]),
            *pair_checks("find by path while hashing", busy["find_path"], idle["find_path"]),
            *pair_checks("find by hash while hashing", busy["find_hash"], idle["find_hash"]),
            *pair_checks("dupes --kind exact while hashing", busy["dupes"], idle["dupes"],
                         f"{self.summary.duplicates:,} copies in the tree, every group in one reply"),
        ]  # fmt: skip

    @staticmethod
    def time_queries(
        queries: dict[str, Callable[[], object]], rounds: int, budget_s: float
    ) -> dict[str, list[float]]:
        """Round-robin, so every kind meets the same load: each round 3 status calls after each
        call of every other kind (dupes every third round: it is the slow one); `rounds` of
        them, or fewer (at least 2) when `budget_s` is spent."""
        out: dict[str, list[float]] = {name: [] for name in queries}
        deadline = time.monotonic() + budget_s

        def timed(name: str) -> None:
            started = time.perf_counter()
            queries[name]()
            out[name].append((time.perf_counter() - started) * 1000)

        for n in range(rounds):
            if n >= 2 and time.monotonic() > deadline:
                break
            for name in queries:
                if name == "status":
                    continue
                if name == "dupes" and n % 3:
                    continue
                timed(name)
                for _ in range(3):
                    timed("status")
                    time.sleep(0.01)
        return out

    def cli_status(self, runs: int) -> list[float]:
        assert self.daemon is not None
        importctl = Path(sys.executable).parent / "importctl"
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [str(importctl), "--socket", str(self.daemon.socket), "status", "--json"],
                check=True,
                capture_output=True,
            )
            times.append(round(time.perf_counter() - started, 4))
        return times

    # -- 6. soak --

    def soak(self) -> None:
        o = self.opts
        daemon = self.daemon
        assert daemon is not None
        duration = o.soak_minutes * 60
        stop = self.mp.Event()
        count = self.mp.Value("i", 0)
        changer = self.mp.Process(
            target=soak_changes, args=(str(self.root), o.soak_rate, 21, stop, count), daemon=True
        )
        samples: list[tuple[float, float]] = []
        hwm: list[float] = []
        loads: list[float] = []
        started = time.monotonic()
        changer.start()
        try:
            while True:
                now = time.monotonic() - started
                mem = daemon.memory()
                samples.append((round(now, 1), round(mb(mem["VmRSS"]), 2)))
                hwm.append(round(mb(mem["VmHWM"]), 2))
                loads.append(load_average())
                if not changer.is_alive():
                    raise BenchError(f"the soak's change process stopped ({changer.exitcode})")
                if now >= duration:
                    break
                time.sleep(min(o.soak_sample_s, max(0.0, duration - now)))
        finally:
            stop.set()
            changer.join(30)
        changes = count.value
        status = wait_roots_idle(daemon, self.timeout())
        flat = flatness(samples, duration)
        self.report.figures["soak"] = {
            "minutes": o.soak_minutes,
            "changes": changes,
            "changes_per_s": round(changes / duration, 2),
            "sample_every_s": o.soak_sample_s,
            **flat,
            "rss_samples_mb": samples,
            "hwm_samples_mb": hwm,
            "load_average_samples": loads,
            "files_after": status["files"],
        }
        limit = max(10.0, 0.05 * flat["first_mb"])
        self.report.checks += [
            Check(f"soak, {o.soak_minutes:g} min of changes ({changes:,}): RSS growth, last - first",
                  flat["growth_mb"], "MB", Target("value_at_most", round(limit, 1)),
                  note=f"medians of {flat['window_s']:.0f}s windows after a {flat['warmup_s']:.0f}s warm-up; "
                       f"target: under 5 % of the first or 10 MB, whichever is larger"),
            Check("  RSS, first window (median)", flat["first_mb"], "MB", INFO),
            Check("  RSS, last window (median)", flat["last_mb"], "MB", INFO),
            Check("  least-squares slope after the warm-up", flat["slope_mb_per_h"], "MB/h", INFO),
            Check("  peak (VmHWM) at the end of the soak", hwm[-1], "MB",
                  Target("value_at_most", RSS_TARGET_MB)),
        ]  # fmt: skip


NOTES = [
    "tree: tools/bench_tree.py (`make bench-tree`), reused when its stamp has the same parameters; "
    "media extraction is off in the bench's config (the videos are random bytes), the root's path "
    "rules and expectations are the tree's own (characters, films, series), so entities and gaps "
    "are mapped during the cold import.",
    "cold: a fresh state dir; from `importd run` spawned until every file is present and every "
    "queue is empty, against `find | xargs -0 b3sum` run twice before and once after (median). "
    "The page cache is warm for both; `find` runs once before each side. RSS: VmRSS 2 s after the "
    "root went idle (its follow-up reconcile behind the watch done), VmHWM the process's peak.",
    "restart: SIGTERM, `find -printf '%p %s %T@ %i'`, then a new process on the same catalog; "
    "the judged figure is the start-up reconcile (`importctl runs`), median of the runs.",
    "latency: the real client (importctl.client) over the socket from the bench's process, round "
    "robin (3 status calls 10 ms apart after each other call, for at most a minute, or as many "
    "rounds as fit), first without load, then while another "
    "process writes new files at a steady rate (and a 64 MiB file every 3 s) that the daemon "
    "settles and hashes; the daemon's CPU and hashing rate over that time are in the JSON.",
    "soak: tools/crash.py's random changes (create, append, rename, rename folder, move, delete, "
    "remove a small tree) in a folder of their own under the root at a steady rate, the daemon's "
    "VmRSS read from /proc every few seconds (rss_samples_mb in the JSON: seconds, MB).",
]


def run(
    work_dir: Path,
    quick: bool,
    scale_files: int | None = None,
    soak_minutes: float | None = None,
    scale_tree: Path | None = None,
) -> dict[str, Any]:
    opts = ScaleOptions.of(work_dir, quick, scale_files, soak_minutes, scale_tree)
    report = ScaleBench(opts).run()
    return {
        "figures": report.figures,
        "checks": report.checks,
        "notes": report.notes,
        "failures": report.failures,
    }


__all__ = ["ScaleBench", "ScaleDaemon", "ScaleOptions", "flatness", "run", "slope_per_hour"]
