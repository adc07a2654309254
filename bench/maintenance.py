"""Maintenance benchmarks (issue 5): `importctl check` against b3sum and find, on trees made here.

Two measurements, each with the real daemon and the real `importctl`, side by side with its
baseline in the same run:
  1. the scrub, `check --verify-hash`, on a tree of big files vs `find | xargs -0 b3sum`
     (MiB/s, warm page cache on both sides; every sweep re-hashes the whole tree, oldest
     verification first, so repeats measure the same work);
  2. the sweep without hashing, `check`, on many small files vs `find -printf '%s %T@ %i\\n'`.

Called by `python -m bench` through its `bench_*` functions; each returns its figures with a
`checks` list for the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import (
    BenchError,
    DaemonRun,
    RootSpec,
    Timed,
    find_importd,
    load_average,
    make_big_file,
    make_tree,
    timed_shell,
    wait_past_settle,
    wait_registered,
    warm,
)
from bench.report import INFO, Check, Target, median

SETTLE_SECONDS = 1.0
RUNS = 3
MIB = 1 << 20


@dataclass(frozen=True)
class CheckRun:
    """One `importctl check` call: its wall time and the sweep's JSON reply."""

    wall: float
    reply: dict[str, Any]

    @property
    def scrub(self) -> dict[str, Any]:
        return dict(self.reply.get("scrub") or {})


def find_importctl() -> Path:
    here = Path(sys.executable).parent / "importctl"
    if here.exists():
        return here
    raise BenchError(f"importctl not found next to {sys.executable} (run `make install`)")


def run_check(importctl: Path, socket: Path, target: Path, verify_hash: bool) -> CheckRun:
    argv = [str(importctl), "--socket", str(socket), "check", str(target), "--json"]
    argv += ["--verify-hash"] if verify_hash else []
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    wall = time.perf_counter() - start
    # The exit status is a mask of findings; only a reply that is not a finished sweep is a failure.
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"importctl check exited {done.returncode} without JSON: {done.stderr.decode()[-300:]}"
        ) from exc
    if reply.get("state") != "completed":
        raise BenchError(f"sweep ended {reply.get('state')!r}: {done.stderr.decode()[-300:]}")
    return CheckRun(wall, reply)


def wait_media_idle(daemon: DaemonRun, timeout: float) -> None:
    """The tree's files are named like videos, so the extract stage analyses them once after
    registration; a nightly scrub runs long after that, so measure it after that too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        media = daemon.status().get("media") or {}
        if not media.get("enabled") or (
            media.get("ready")
            and not media.get("intake")
            and not media.get("queued")
            and not media.get("running")
        ):
            return
        time.sleep(0.5)
    raise BenchError("the extract stage did not finish analysing the tree")


def registered_daemon(home: Path, name: str, root: Path, expected: int) -> DaemonRun:
    """A daemon started on `root`, returned once every file of it is in the catalog."""
    daemon = DaemonRun(find_importd(), home, [RootSpec(name, root)], SETTLE_SECONDS)
    daemon.start()
    try:
        daemon.wait_ready()
        daemon.wait_reconciled(name, timeout=max(600.0, expected / 50))
        wait_registered(daemon, expected, timeout=600)
        wait_media_idle(daemon, timeout=900)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _findings(run: CheckRun) -> int:
    return len(run.reply.get("findings") or [])


def bench_scrub(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """`check --verify-hash` on 64 files (8 MiB each with --quick, 64 MiB otherwise) vs b3sum."""
    files, size = 64, (8 if quick else 64) * MIB
    root = work_dir / "scrub" / "root"
    start = time.perf_counter()
    paths = [root / f"reel{i // 8:02d}" / f"take{i:03d}.mov" for i in range(files)]
    for i, path in enumerate(paths):
        make_big_file(path, size, seed=100 + i)
    os.sync()
    generate_s = time.perf_counter() - start
    total = files * size
    wait_past_settle(paths, SETTLE_SECONDS)

    importctl = find_importctl()
    daemon = registered_daemon(work_dir / "scrub" / "daemon", "reels", root, files)
    b3sum: list[Timed] = []
    scrubs: list[CheckRun] = []
    try:
        # Interleaved, one warm-up of each first: both sides read from the page cache and share
        # whatever else the machine is doing.
        warm(root)
        timed_shell('find "$1" -type f -print0 | xargs -0 b3sum > /dev/null', str(root))
        run_check(importctl, daemon.socket, root, verify_hash=True)
        for _ in range(RUNS):
            b3sum.append(timed_shell('find "$1" -type f -print0 | xargs -0 b3sum > /dev/null', str(root)))
            scrubs.append(run_check(importctl, daemon.socket, root, verify_hash=True))
        cpu = daemon.cpu_seconds()
    finally:
        daemon.stop()

    for run in scrubs:
        if run.scrub.get("bytes") != total or run.scrub.get("files") != files:
            raise BenchError(f"scrub verified {run.scrub} of {files} files, {total} bytes")
    b3sum_s = median([t.wall for t in b3sum])
    scrub_s = median([float(r.scrub["seconds"]) for r in scrubs])
    wall_s = median([r.wall for r in scrubs])
    mib = total / MIB
    n = f"{files} x {size // MIB} MiB"
    checks = [
        Check(f"scrub {n} (check --verify-hash, scrub seconds)", mib / scrub_s, "MiB/s",
              Target("ratio_at_least", 0.9), mib / b3sum_s, "b3sum"),
        Check("  same, wall time of the importctl call", mib / wall_s, "MiB/s", INFO, mib / b3sum_s, "b3sum"),
    ]  # fmt: skip
    return {
        "files": files,
        "bytes": total,
        "generate_s": round(generate_s, 2),
        "b3sum_s": [round(t.wall, 3) for t in b3sum],
        "b3sum_cpu_s": [round(t.cpu, 3) for t in b3sum],
        "scrub_s": [r.scrub["seconds"] for r in scrubs],
        "importctl_wall_s": [round(r.wall, 3) for r in scrubs],
        "scrub_mib_s": round(mib / scrub_s, 1),
        "importctl_mib_s": round(mib / wall_s, 1),
        "b3sum_mib_s": round(mib / b3sum_s, 1),
        "findings": [_findings(r) for r in scrubs],
        "daemon_cpu_s": cpu,
        "load_1m": load_average(),
        "checks": checks,
    }


def bench_check_walk(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    """`check` (no hashing) on 100,000 small files (10,000 with --quick) vs `find -printf`."""
    files = 10_000 if quick else 100_000
    root = work_dir / "walk" / "root"
    start = time.perf_counter()
    tree = make_tree(root, files, max(1, files // 100), 4096)
    os.sync()
    generate_s = time.perf_counter() - start
    wait_past_settle(tree.sample, SETTLE_SECONDS)

    importctl = find_importctl()
    daemon = registered_daemon(work_dir / "walk" / "daemon", "legacy", root, tree.files)
    finds: list[Timed] = []
    checks_run: list[CheckRun] = []
    try:
        warm(root)
        run_check(importctl, daemon.socket, root, verify_hash=False)
        for _ in range(RUNS):
            finds.append(timed_shell("find \"$1\" -printf '%s %T@ %i\\n' > /dev/null", str(root)))
            checks_run.append(run_check(importctl, daemon.socket, root, verify_hash=False))
    finally:
        daemon.stop()

    find_s = median([t.wall for t in finds])
    wall_s = median([r.wall for r in checks_run])
    checks = [
        Check(f"check (no hashing) {tree.files:,} x 4 KiB, importctl wall time", wall_s, "s",
              Target("ratio_at_most", 3), find_s, "find -printf"),
    ]  # fmt: skip
    return {
        "files": tree.files,
        "folders": tree.folders,
        "generate_s": round(generate_s, 2),
        "find_printf_s": [round(t.wall, 3) for t in finds],
        "importctl_wall_s": [round(r.wall, 3) for r in checks_run],
        "files_seen": [r.reply.get("files_seen") for r in checks_run],
        "findings": [_findings(r) for r in checks_run],
        "load_1m": load_average(),
        "checks": checks,
    }


__all__ = ["bench_check_walk", "bench_scrub"]
