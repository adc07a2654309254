"""The core benchmark (issue 2): the real `importd` against find/b3sum on trees generated here.

Five measurements, side by side in one run:
  1. cold registration of N small files vs `find | xargs -0 b3sum`;
  2. restart with nothing changed vs `find -printf '%s %T@ %i\\n'` (and nothing re-hashed);
  3. one big file, the daemon's hashing (and `hash_file` called directly) vs `b3sum`;
  4. create -> registered latency in a watched root, minus settle_seconds;
  5. the daemon's memory after the cold registration.

The daemon runs as a real process with its own config, state and socket under the work dir;
its stderr is read by a thread that stamps every line with the wall clock on arrival, which is
how the reconcile's end is caught without polling.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.report import INFO, Check, Target, median, percentile

Say = Callable[[str], None]

BOUND = re.compile(r"importd \S+: catalog .*control socket")


def reconciled(root: str) -> re.Pattern[str]:
    """The daemon's line at the end of a whole-root reconcile (a subtree scan names root/path)."""
    return re.compile(
        rf"reconcile (?P<root>{re.escape(root)}): (?P<state>\w+), (?P<seen>\d+) files seen, "
        r"(?P<changed>\d+) changed, (?P<vanished>\d+) vanished, (?P<errors>\d+) unreadable, "
        r"(?P<secs>[\d.]+)s"
    )


# The daemon must log plainly to our pipe and read only the config we write.
_ENV_DROP = (
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
    "INVOCATION_ID",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "IMPORTD_CONFIG",
    "IMPORTD_SOCKET",
    "IMPORTD_CATALOG_URL",
    "IMPORTD_STATE_DIR",
)


class BenchError(Exception):
    """A measurement could not be taken; the phase records the reason and the others go on."""


@dataclass(frozen=True)
class CoreOptions:
    work: Path
    out_dir: Path
    importd: Path
    files: int = 100_000
    folders: int = 1_000
    file_size: int = 4096
    big_bytes: int = 2 << 30
    big_runs: int = 3
    cold_runs: int = 3
    baseline_runs: int = 3
    latency_files: int = 200
    latency_spacing_s: float = 0.05
    settle_seconds: float = 1.0
    profile: bool = False
    profile_gil: bool = False
    py_spy: Path | None = None


@dataclass
class CoreReport:
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----- generated data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    root: Path
    files: int
    folders: int
    nbytes: int
    sample: tuple[Path, ...]


def make_tree(root: Path, files: int, folders: int, size: int, seed: int = 2) -> Tree:
    """`files` files of `size` random bytes over `folders` leaf folders, two levels deep (the
    shape of a legacy show/episode tree), each file's content distinct."""
    rng = random.Random(seed)
    folders = max(1, min(folders, files))
    top = max(1, round(folders**0.5 / 3))  # 1,000 folders -> 10 top-level x 100
    per_folder = -(-files // folders)
    made = 0
    sample: list[Path] = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for f in range(folders):
        folder = root / f"show{f % top:02d}" / f"ep{f // top:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_folder, files - made)):
            path = folder / f"clip{i:04d}.bin"
            fd = os.open(path, flags, 0o644)
            try:
                os.write(fd, rng.randbytes(size))
            finally:
                os.close(fd)
            made += 1
            if made == 1 or made % max(1, files // 5) == 0:
                sample.append(path)
    return Tree(root, made, folders, made * size, tuple(sample))


def make_big_file(path: Path, nbytes: int, seed: int = 3) -> None:
    """Random 16 MiB blocks, each different (a counter in its head), written straight out."""
    rng = random.Random(seed)
    block = bytearray(rng.randbytes(16 << 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        written, n = 0, 0
        while written < nbytes:
            block[:8] = n.to_bytes(8, "little")
            chunk = memoryview(block)[: min(len(block), nbytes - written)]
            fh.write(chunk)
            written += len(chunk)
            n += 1


def wait_past_settle(paths: Sequence[Path], settle_seconds: float) -> None:
    """importd settles from the ctime: files younger than settle_seconds would add a wait that
    is not hashing. Cheap to rule out."""
    newest = max(os.lstat(p).st_ctime for p in paths)
    delay = newest + settle_seconds + 0.2 - time.time()
    if delay > 0:
        time.sleep(delay)


# ----- baselines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float  # user + system of the child processes, from getrusage(RUSAGE_CHILDREN)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_shell(script: str, *args: str) -> Timed:
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", "-c", "set -o pipefail; " + script, "bench", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"baseline `{script}` failed ({done.returncode}): {done.stderr.decode()[-300:]}")
    return Timed(elapsed, _children_cpu() - cpu)


def warm(root: Path) -> None:
    """The same warm-up before each side: one `find` over the tree (dentries and inodes)."""
    timed_shell('find "$1" > /dev/null', str(root))


def warm_daemon_code() -> None:
    """The daemon's side of the warm-up: its modules and libraries read once (b3sum's binary is
    warm from the baseline runs before the first daemon starts)."""
    subprocess.run([sys.executable, "-c", "import importd.service"], check=True, capture_output=True)


def b3sum_digest(path: Path, *flags: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(["b3sum", "--no-names", *flags, str(path)], capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"b3sum failed: {done.stderr.decode()[-300:]}")
    return elapsed, done.stdout.decode().strip()


def load_average() -> float:
    """1-minute load: other work on the machine shows up here and in the figures."""
    return round(os.getloadavg()[0], 2)


# ----- the daemon as a process -----------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    at: float  # wall clock when the bench read it from the pipe
    text: str


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class RootSpec:
    name: str
    path: Path
    watch: str = "inotify"
    poll_interval_s: float | None = None


class DaemonRun:
    """One `importd run` with its own config, state and socket in `home`."""

    def __init__(
        self,
        importd: Path,
        home: Path,
        roots: Sequence[RootSpec],
        settle_seconds: float,
        profile_to: Path | None = None,
        py_spy: Path | None = None,
        profile_gil: bool = False,
    ) -> None:
        self.importd = importd
        self.home = home
        self.roots = roots
        self.settle_seconds = settle_seconds
        self.state = home / "state"
        self.db = self.state / "catalog.db"
        self.socket = home / "control.sock"
        self.config = home / "importd.toml"
        self.log_path = home / "importd.log"
        self.profile_to = profile_to
        self.py_spy = py_spy
        self.profile_gil = profile_gil
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.lines: list[LogLine] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        text = [
            f"settle_seconds = {self.settle_seconds}",
            f"state_dir = {toml_str(str(self.state))}",
            "[catalog]",
            f"url = {toml_str('sqlite:///' + str(self.db))}",
            "[control]",
            f"socket = {toml_str(str(self.socket))}",
        ]
        for root in self.roots:
            text += [
                "[[roots]]",
                f"name = {toml_str(root.name)}",
                f"path = {toml_str(str(root.path))}",
                f"watch = {toml_str(root.watch)}",
            ]
            if root.poll_interval_s is not None:
                text.append(f"poll_interval_seconds = {root.poll_interval_s}")
        self.config.write_text("\n".join(text) + "\n")

    def start(self) -> None:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env["PYTHONUNBUFFERED"] = "1"
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [str(self.importd), "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, name="bench-daemon-log", daemon=True)
        self._reader.start()
        if self.profile_to is not None and self.py_spy is not None:
            self.profiler = start_profiler(self.py_spy, self.proc.pid, self.profile_to, self.profile_gil)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.log_path, "ab") as log:
            for raw in self.proc.stderr:
                at = time.time()
                log.write(raw)
                with self._cond:
                    self.lines.append(LogLine(at, raw.decode(errors="replace").rstrip("\n")))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_for(
        self, pattern: re.Pattern[str], timeout: float, since: int = 0
    ) -> tuple[LogLine, int] | None:
        """The first log line from index `since` matching `pattern`, with its index; None on
        timeout. A daemon that exits meanwhile is an error, with its last lines."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(since, len(self.lines)):
                    if pattern.search(self.lines[i].text):
                        return self.lines[i], i
                since = len(self.lines)
                if self.proc is not None and self.proc.poll() is not None:
                    tail = " | ".join(line.text for line in self.lines[-5:])
                    raise BenchError(f"importd exited with {self.proc.returncode}: {tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def client(self) -> Any:
        from importctl.client import Client

        return Client(self.socket, timeout=30.0)

    def status(self) -> dict[str, Any]:
        return self.client().status()  # type: ignore[no-any-return]

    def cpu_seconds(self) -> dict[str, float]:
        """User and system CPU the daemon used so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return {"user": int(fields[11]) / tick, "system": int(fields[12]) / tick}

    def memory(self) -> dict[str, int]:
        """VmRSS, VmHWM (kB) of the daemon process."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize", "Threads"):
                out[key] = int(rest.split()[0])
        return out

    def stop(self, timeout: float = 15.0) -> float | None:
        """SIGTERM and wait; returns the seconds it took to exit (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            self._finish_profiler()
            return None
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            took: float | None = time.perf_counter() - start
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            took = None
        if self._reader is not None:
            self._reader.join(5)
        self._finish_profiler()
        return took

    def _finish_profiler(self) -> None:
        if self.profiler is not None:
            try:
                self.profiler.wait(30)
            except subprocess.TimeoutExpired:
                self.profiler.send_signal(signal.SIGINT)
                self.profiler.wait(10)
            self.profiler = None

    def __enter__(self) -> DaemonRun:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 60.0) -> LogLine:
        found = self.wait_for(BOUND, timeout)
        if found is None:
            raise BenchError(f"importd did not bind its socket within {timeout:.0f}s (log: {self.log_path})")
        return found[0]

    def wait_reconciled(
        self, root: str, timeout: float, progress: Callable[[], None] | None = None, every: float = 10.0
    ) -> tuple[LogLine, re.Match[str]]:
        """The end of the first reconcile of `root`: the daemon logs it after the catalog writer
        flushed everything the walk sent on, so the files are committed when the line appears."""
        pattern = reconciled(root)
        deadline = time.monotonic() + timeout
        while True:
            found = self.wait_for(pattern, min(every, max(0.0, deadline - time.monotonic())))
            if found is not None:
                match = pattern.search(found[0].text)
                assert match is not None
                if match["state"] != "completed":
                    raise BenchError(f"reconcile of {root} ended {match['state']}: {found[0].text}")
                return found[0], match
            if time.monotonic() >= deadline:
                raise BenchError(f"reconcile of {root} did not complete within {timeout:.0f}s")
            if progress is not None:
                progress()


def iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


def scan_seconds(status: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(started, finished, duration) of status.last_scan, wall clock with millisecond precision."""
    last = status.get("last_scan") or {}
    started, finished = iso_to_epoch(last.get("started")), iso_to_epoch(last.get("finished"))
    if started is None or finished is None:
        return started, finished, None
    return started, finished, finished - started


def startup_scan_seconds(daemon: DaemonRun, root: str) -> tuple[float | None, float | None, float | None]:
    """(started, finished, duration) of the root's start-up reconcile. Not status.last_scan: a
    root's first import is followed by a second reconcile once its watch is in place."""
    for run in daemon.client().runs(limit=20):
        if run["root"] == root and run["trigger"] == "startup" and run["kind"] == "reconcile":
            started, finished = iso_to_epoch(run["started"]), iso_to_epoch(run["finished"])
            if started is None or finished is None:
                return started, finished, None
            return started, finished, finished - started
    return None, None, None


def wait_roots_idle(daemon: DaemonRun, timeout: float) -> dict[str, Any]:
    """Poll status until no root is scanning (every one watching, polling or offline)."""
    deadline = time.monotonic() + timeout
    while True:
        status = daemon.status()
        if all(root["state"] != "scanning" for root in status["roots"]) and queues_empty(status):
            return status
        if time.monotonic() > deadline:
            raise BenchError(f"after {timeout:.0f}s roots still scanning: {status['roots']}")
        time.sleep(0.1)


def queues_empty(status: Mapping[str, Any]) -> bool:
    return all(v == 0 for v in status.get("queue", {}).values())


def wait_registered(daemon: DaemonRun, expected: int, timeout: float) -> tuple[dict[str, Any], float | None]:
    """Poll status until present == expected and every queue is empty. Returns the status and,
    when the first poll was not enough already, the wall time the condition was first seen."""
    deadline = time.monotonic() + timeout
    first = True
    while True:
        status = daemon.status()
        now = time.time()
        if status["files"]["present"] >= expected and queues_empty(status):
            return status, None if first else now
        first = False
        if time.monotonic() > deadline:
            raise BenchError(
                f"after {timeout:.0f}s: {status['files']} registered, queues {status['queue']} "
                f"(expected {expected} present)"
            )
        time.sleep(0.2)


# ----- py-spy ----------------------------------------------------------------------------------


def start_profiler(py_spy: Path, pid: int, out: Path, gil: bool = False) -> subprocess.Popen[bytes]:
    """Sample the daemon until it exits. --nonblocking: the daemon is never paused (the samples
    may be slightly torn; the figures of a profiled run are still perturbed by py-spy's CPU).
    With `gil`, only the thread holding the GIL is sampled: where the Python time goes, as
    opposed to which threads are busy or waiting."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads"]
    argv += ["--gil"] if gil else []
    return subprocess.Popen(
        [*argv, "--format", "raw", "--output", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Frames every stack shares (event loop, thread start-up): they would top the "total" list.
_PLUMBING = (
    "(threading.py)",
    "(asyncio/",
    "(anyio/_backends/",
    "(anyio/_core/_eventloop.py)",
    "(importd/__main__.py)",
    "(concurrent/futures/thread.py)",
)


def _is_plumbing(frame: str) -> bool:
    return frame.startswith("<module> ") or any(p in frame for p in _PLUMBING)


def _short_frame(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    file = m["file"]
    for anchor in ("site-packages/", "/daemon/", "/lib/python3.11/", "/lib/python3"):
        if anchor in file:
            file = file.split(anchor, 1)[1]
            break
    return f"{m['func']} ({file})"


def summarize_profile(raw_text: str, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks from `py-spy record --format raw --threads` -> the hot spots: share of
    samples per leaf function (self), per function anywhere on the stack (total), per thread.
    Start-up imports are counted apart: they are the daemon's start-up, not its work."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    thread_c: Counter[str] = Counter()
    samples = imports = 0
    for line in raw_text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = "(unnamed)"
        if frames and frames[0].startswith("thread ("):
            _, sep, name = frames[0].partition(": ")
            # "Thread-3 (_connection_worker_thread)" and "Thread-4 (...)" are one kind of thread.
            thread = re.sub(r"^Thread-\d+ ", "", name) if sep else "(unnamed)"
            frames = frames[1:]
        samples += count
        if any("_find_and_load" in f for f in frames):
            imports += count
            continue
        thread_c[thread] += count
        funcs = [_short_frame(f) for f in frames]
        if not funcs:
            self_c["(no Python frame)"] += count
            continue
        self_c[funcs[-1]] += count
        for f in set(funcs):
            if not _is_plumbing(f):
                total_c[f] += count

    def shares(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / samples, 4)) for name, n in c.most_common(top)] if samples else []

    return {
        "samples": samples,
        "imports": round(imports / samples, 4) if samples else 0.0,
        "threads": shares(thread_c),
        "self": shares(self_c),
        "total": shares(total_c),
    }


# ----- the measurements ------------------------------------------------------------------------


def _mb(kb: int) -> float:
    return kb * 1024 / 1e6


def _cpu_total(cpu: Mapping[str, float]) -> float:
    return round(cpu["user"] + cpu["system"], 2)


class CoreBench:
    def __init__(self, opts: CoreOptions, say: Say) -> None:
        self.opts = opts
        self.say = say
        self.report = CoreReport()
        self.tree: Tree | None = None
        self.cold_daemon: DaemonRun | None = None

    def profile_path(self, phase: str) -> Path | None:
        if not self.opts.profile or self.opts.py_spy is None:
            return None
        return self.opts.out_dir / f"profile-{phase}.txt"

    def new_daemon(self, home: Path, roots: Sequence[RootSpec], phase: str | None) -> DaemonRun:
        """A daemon for `phase`, sampled by py-spy when profiling was asked for."""
        o = self.opts
        profile = self.profile_path(phase) if phase else None
        return DaemonRun(o.importd, home, roots, o.settle_seconds, profile, o.py_spy, o.profile_gil)

    def collect_profile(self, phase: str) -> None:
        path = self.profile_path(phase)
        if path is None or not path.exists():
            return
        summary = summarize_profile(path.read_text())
        summary["file"] = str(path)
        self.report.profiles[phase] = summary

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        load = load_average()
        self.say(f"core: {name} (load average {load}) ...")
        try:
            yield
        except Exception as exc:
            self.report.failures[name] = f"{type(exc).__name__}: {exc}"
            self.say(f"core: {name} FAILED: {type(exc).__name__}: {exc}")
        else:
            self.say(f"core: {name} done in {time.perf_counter() - start:.1f}s")
        finally:
            self.report.figures.setdefault("load_average", {})[name] = [load, load_average()]

    def run(self) -> CoreReport:
        work = self.opts.work
        work.mkdir(parents=True, exist_ok=True)
        self.report.figures["work_dir"] = str(work)
        try:
            with self.phase("generate"):
                self.generate()
            if self.tree is not None:
                with self.phase("cold"):
                    self.cold()
                with self.phase("restart"):
                    self.restart()
            with self.phase("big_file"):
                self.big_file()
            with self.phase("latency"):
                self.latency()
        finally:
            if self.cold_daemon is not None:
                self.cold_daemon.stop()
        self.report.notes.extend(METHOD_NOTES)
        return self.report

    # 0. data --------------------------------------------------------------------------------

    def generate(self) -> None:
        o = self.opts
        start = time.perf_counter()
        self.tree = make_tree(o.work / "cold" / "root", o.files, o.folders, o.file_size)
        made = time.perf_counter() - start
        start = time.perf_counter()
        os.sync()  # so write-back of the tree does not run during the measurements
        synced = time.perf_counter() - start
        self.report.figures["tree"] = {
            "files": self.tree.files,
            "folders": self.tree.folders,
            "file_size": o.file_size,
            "bytes": self.tree.nbytes,
            "generate_s": round(made, 2),
            "sync_s": round(synced, 2),
        }
        self.say(f"core: generated {self.tree.files:,} files in {made:.1f}s (sync {synced:.1f}s)")

    # 1 + 5. cold registration and memory ----------------------------------------------------

    def _b3sum_tree(self, runs: int) -> list[Timed]:
        assert self.tree is not None
        out = []
        for _ in range(runs):
            warm(self.tree.root)
            out.append(
                timed_shell('find "$1" -type f -print0 | xargs -0 b3sum > /dev/null', str(self.tree.root))
            )
        return out

    def cold(self) -> None:
        """Cold registration, `cold_runs` times with a new catalog each (the median is judged: one
        run of six seconds on this VM moves by ±0.7 s from run to run). The last run's daemon is
        kept for the restart phase."""
        o, tree = self.opts, self.tree
        assert tree is not None
        before = self._b3sum_tree(o.baseline_runs)
        self.say(f"core: find | xargs -0 b3sum: {', '.join(f'{t.wall:.2f}s' for t in before)}")
        warm_daemon_code()
        runs = [self._cold_once(run, last=run == o.cold_runs - 1) for run in range(o.cold_runs)]
        # The baseline once more after the daemon: load from other work on the machine then
        # weighs on both sides' medians alike.
        after = self._b3sum_tree(1)
        baseline_runs = before + after
        baseline = median([t.wall for t in baseline_runs])
        judged = sorted(runs, key=lambda r: r["process_start_to_registered_s"])[len(runs) // 2]
        mismatched = sum(r["digest_mismatches_vs_b3sum"] for r in runs)
        self.report.figures["cold"] = {
            "baseline_b3sum_s": [round(t.wall, 3) for t in baseline_runs],
            "baseline_b3sum_cpu_s": [round(t.cpu, 3) for t in baseline_runs],
            **judged,
            "runs": runs,
        }
        self.say(
            "core: cold runs, process start -> registered: "
            + ", ".join(f"{r['process_start_to_registered_s']:.2f}s" for r in runs)
        )
        n = f"{tree.files:,} x {o.file_size // 1024} KiB"
        base = "find|xargs b3sum"
        cpu_base = median([t.cpu for t in baseline_runs])
        of = f" (median of {len(runs)})" if len(runs) > 1 else ""
        # Memory: the largest of the runs, not the median one's.
        mem = {key: max(r["memory_kb"][key] for r in runs) for key in ("VmRSS", "VmHWM")}
        at_registered = max(r["memory_at_registered_kb"]["VmRSS"] for r in runs)
        self.report.checks += [
            Check(f"cold registration {n}: process start -> registered{of}",
                  median([r["process_start_to_registered_s"] for r in runs]), "s",
                  Target("ratio_at_most", 3), baseline, base),
            Check(f"  same, reconcile start -> end (start-up run){of}",
                  median([r["reconcile_s"] for r in runs]), "s",
                  Target("ratio_at_most", 3), baseline, base),
            Check("  CPU time, user+system (daemon process vs b3sum)",
                  _cpu_total(judged["daemon_cpu_s"]), "s", INFO, cpu_base, base),
            Check(f"daemon RSS after cold registration (VmRSS{', largest run' if of else ''})",
                  _mb(mem["VmRSS"]), "MB", Target("value_at_most", 150)),
            Check("  same, the moment the last file was registered", _mb(at_registered), "MB", INFO),
            Check("  peak RSS during cold registration (VmHWM)", _mb(mem["VmHWM"]), "MB", INFO),
        ]  # fmt: skip
        if mismatched:
            self.report.failures["cold_digests"] = f"{mismatched} sampled digests differ from b3sum"

    def _cold_once(self, run: int, *, last: bool) -> dict[str, Any]:
        """One daemon on a new catalog registering the whole tree; its figures."""
        o, tree = self.opts, self.tree
        assert tree is not None
        wait_past_settle(tree.sample, o.settle_seconds)
        warm(tree.root)
        home = o.work / "cold" / ("daemon" if last else f"daemon{run}")
        shutil.rmtree(home, ignore_errors=True)
        daemon = self.new_daemon(home, [RootSpec("legacy", tree.root)], "cold" if last else None)
        if last:
            self.cold_daemon = daemon
        daemon.start()
        try:
            ready = daemon.wait_ready()

            def progress() -> None:
                st = daemon.status()
                self.say(
                    f"core: cold: {st['files']['present']:,}/{tree.files:,} registered after "
                    f"{time.time() - daemon.started_at:.0f}s, queue {st['queue']}"
                )

            timeout = max(600.0, tree.files / 50)
            line, match = daemon.wait_reconciled("legacy", timeout=timeout, progress=progress)
            status, confirmed = wait_registered(daemon, tree.files, timeout=120)
            mem_registered = daemon.memory()
            # Memory and CPU once the root is up: its first import is followed by a stat-only
            # reconcile behind the new watch, which holds the root's catalog identities meanwhile.
            wait_roots_idle(daemon, timeout=120)
            mem = daemon.memory()
            cpu = daemon.cpu_seconds()
            started, _finished, scan_s = startup_scan_seconds(daemon, "legacy")
            done_at = confirmed if confirmed is not None else line.at
            from_start = done_at - daemon.started_at
            reconcile_s = scan_s if scan_s is not None else float(match["secs"])
            mismatched = self.check_digests(daemon, tree.sample)
        finally:
            if not last:
                daemon.stop()
        return {
            "process_start_to_socket_s": round(ready.at - daemon.started_at, 3),
            "process_start_to_reconcile_start_s": round(started - daemon.started_at, 3) if started else None,
            "process_start_to_registered_s": round(from_start, 3),
            "reconcile_s": round(reconcile_s, 3),
            "reconcile_log_s": float(match["secs"]),
            "files_seen": int(match["seen"]),
            "present": status["files"]["present"],
            "errors": status["files"]["error"],
            "hashed_files": status["counters"]["hashed_files"],
            "files_per_s": round(tree.files / reconcile_s, 1),
            "daemon_cpu_s": cpu,
            "digest_mismatches_vs_b3sum": mismatched,
            "memory_kb": mem,
            "memory_at_registered_kb": mem_registered,
        }

    def check_digests(self, daemon: DaemonRun, paths: Sequence[Path]) -> int:
        """The daemon's BLAKE3 of a few files must be b3sum's: a fast wrong hash is no result."""
        client = daemon.client()
        bad = 0
        for path in paths:
            _, expected = b3sum_digest(path)
            rows = client.find(str(path))
            if not rows or rows[0]["blake3"] != expected:
                bad += 1
        return bad

    # 2. restart with nothing changed --------------------------------------------------------

    def _find_printf(self, runs: int) -> list[Timed]:
        assert self.tree is not None
        out = []
        for _ in range(runs):
            warm(self.tree.root)
            out.append(timed_shell("find \"$1\" -printf '%s %T@ %i\\n' > /dev/null", str(self.tree.root)))
        return out

    def restart(self) -> None:
        o, tree, old = self.opts, self.tree, self.cold_daemon
        assert tree is not None
        if old is None:
            raise BenchError("no catalog from the cold registration to restart on")
        stop_s = old.stop()
        self.cold_daemon = None
        self.collect_profile("cold")
        before = self._find_printf(o.baseline_runs)
        warm(tree.root)

        daemon = self.new_daemon(old.home, old.roots, "restart")
        with daemon:
            ready = daemon.wait_ready()
            line, match = daemon.wait_reconciled("legacy", timeout=600)
            status = daemon.status()
            mem = daemon.memory()
            cpu = daemon.cpu_seconds()
        self.collect_profile("restart")
        runs = before + self._find_printf(1)
        baseline = median([t.wall for t in runs])
        self.say(f"core: find -printf: {', '.join(f'{t.wall:.3f}s' for t in runs)}")
        started, _finished, scan_s = scan_seconds(status)
        reconcile_s = scan_s if scan_s is not None else float(match["secs"])
        from_start = line.at - daemon.started_at
        rehashed = int(status["counters"]["hashed_files"])
        self.report.figures["restart"] = {
            "stop_after_cold_s": stop_s,
            "baseline_find_s": [round(t.wall, 3) for t in runs],
            "process_start_to_socket_s": round(ready.at - daemon.started_at, 3),
            "process_start_to_reconcile_start_s": round(started - daemon.started_at, 3) if started else None,
            "process_start_to_scan_completed_s": round(from_start, 3),
            "reconcile_s": round(reconcile_s, 3),
            "reconcile_log_s": float(match["secs"]),
            "files_seen": int(match["seen"]),
            "changed": int(match["changed"]),
            "hashed_files": rehashed,
            "daemon_cpu_s": cpu,
            "memory_kb": mem,
        }
        base = "find -printf"
        self.report.checks += [
            Check("restart, nothing changed: reconcile (last_scan)", reconcile_s, "s",
                  Target("ratio_at_most", 2), baseline, base),
            Check("  same, process start -> scan completed", from_start, "s",
                  INFO, baseline, base,
                  note=f"includes interpreter start-up, imports, migrations and the watcher's own walk "
                       f"({ready.at - daemon.started_at:.2f}s to socket bound)"),
            Check("  files re-hashed on restart (counters.hashed_files)", rehashed, "files",
                  Target("value_at_most", 1)),
            Check("  peak RSS during restart reconcile (VmHWM)", _mb(mem["VmHWM"]), "MB", INFO),
        ]  # fmt: skip
        if stop_s is not None:
            self.report.checks.append(Check("  SIGTERM -> exit after cold registration", stop_s, "s", INFO))

    # 3. one big file ------------------------------------------------------------------------

    def big_file(self) -> None:
        from importd.items import FileRef, FileStat, HashedFile, SettledFile
        from importd.pipeline.hasher import CHUNK, hash_file

        o = self.opts
        root = o.work / "big" / "root"
        path = root / "big.bin"
        start = time.perf_counter()
        make_big_file(path, o.big_bytes)
        os.sync()
        self.say(f"core: wrote {o.big_bytes / (1 << 30):g} GiB in {time.perf_counter() - start:.1f}s")
        wait_past_settle([path], o.settle_seconds)
        mib = o.big_bytes / (1 << 20)

        _, digest = b3sum_digest(path)  # warm-up: the same single read before every side
        b3: list[float] = []
        b3_nommap = [b3sum_digest(path, "--no-mmap")[0] for _ in range(o.big_runs)]

        def direct_once() -> float:
            settled = SettledFile(FileRef(0, "bench", b"big.bin"), FileStat.of(os.stat(path)))
            t = time.perf_counter()
            outcome = hash_file(os.fsencode(path), settled, bytearray(CHUNK))
            took = time.perf_counter() - t
            if not isinstance(outcome, HashedFile) or outcome.blake3 != digest:
                raise BenchError(f"hash_file gave {outcome!r}, b3sum {digest}")
            return took

        direct_first = direct_once()
        direct = [direct_once() for _ in range(o.big_runs)]

        # A fresh daemon per run: the file is hashed by the start-up reconcile.
        fresh: list[float] = []
        for run in range(o.big_runs):
            home = o.work / "big" / f"fresh{run}"
            shutil.rmtree(home, ignore_errors=True)
            b3.append(b3sum_digest(path)[0])
            phase = "big_file_fresh" if run == 0 else None
            with self.new_daemon(home, [RootSpec("big", root)], phase) as daemon:
                daemon.wait_ready()
                _, match = daemon.wait_reconciled("big", timeout=600)
                status = daemon.status()
                rows = daemon.client().find(str(path))
                _, _, scan_s = startup_scan_seconds(daemon, "big")
            fresh.append(scan_s if scan_s is not None else float(match["secs"]))
            if status["counters"]["hashed_bytes"] != o.big_bytes:
                raise BenchError(f"daemon hashed {status['counters']['hashed_bytes']} bytes")
            if not rows or rows[0]["blake3"] != digest:
                raise BenchError(f"daemon digest {rows[0]['blake3'] if rows else None} != b3sum {digest}")
            if run == 0:
                self.collect_profile("big_file_fresh")

        # One running daemon re-hashing the file after each touch (the service's normal case):
        # a poll root, so only our `scan` finds the change and the watcher cannot race it.
        running: list[float] = []
        home = o.work / "big" / "running"
        shutil.rmtree(home, ignore_errors=True)
        spec = [RootSpec("big", root, watch="poll", poll_interval_s=86400.0)]
        with self.new_daemon(home, spec, "big_file_running") as daemon:
            daemon.wait_ready()
            daemon.wait_reconciled("big", timeout=600)
            client = daemon.client()
            for _ in range(o.big_runs):
                st = os.stat(path)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
                wait_past_settle([path], o.settle_seconds)
                b3.append(b3sum_digest(path)[0])
                since = len(daemon.lines)
                before = client.status()["counters"]["hashed_bytes"]
                client.scan("big")
                found = daemon.wait_for(reconciled("big"), 600, since)
                if found is None:
                    raise BenchError("the rescan of the big file did not complete")
                status = client.status()
                if status["counters"]["hashed_bytes"] - before != o.big_bytes:
                    raise BenchError("the touched big file was not re-hashed")
                _, _, scan_s = scan_seconds(status)
                logged = reconciled("big").search(found[0].text)
                running.append(scan_s if scan_s is not None else float(logged["secs"] if logged else "nan"))
        self.collect_profile("big_file_running")

        b3_mibs = mib / median(b3)
        self.report.figures["big_file"] = {
            "bytes": o.big_bytes,
            "b3sum_s": b3,
            "b3sum_no_mmap_s": b3_nommap,
            "hash_file_direct_first_s": direct_first,
            "hash_file_direct_s": direct,
            "daemon_running_rescan_s": running,
            "daemon_fresh_startup_s": fresh,
            "digest": digest,
        }
        size = f"{o.big_bytes / (1 << 30):g} GiB"
        self.report.checks += [
            Check(f"{size} file, running daemon re-hash (median of {o.big_runs})", mib / median(running),
                  "MiB/s", Target("ratio_at_least", 0.85), b3_mibs, "b3sum"),
            Check("  fresh daemon, hashed at start-up", mib / median(fresh), "MiB/s", INFO, b3_mibs, "b3sum",
                  note="a new process's first read of the file may be slower (see notes)"),
            Check("  hash_file() called directly", mib / median(direct), "MiB/s", INFO, b3_mibs, "b3sum"),
            Check("  b3sum --no-mmap (reference)", mib / median(b3_nommap), "MiB/s", INFO, b3_mibs, "b3sum"),
        ]  # fmt: skip

    # 4. create -> registered latency --------------------------------------------------------

    def latency(self) -> None:
        o = self.opts
        root = o.work / "latency" / "root"
        incoming = root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        home = o.work / "latency" / "daemon"
        rng = random.Random(4)
        with self.new_daemon(home, [RootSpec("inbox", root)], "latency") as daemon:
            daemon.wait_ready()
            daemon.wait_reconciled("inbox", timeout=60)
            self._wait_watching(daemon, "inbox")
            idle = daemon.memory()
            poller = CatalogPoller(daemon.db)
            poller.start()
            try:
                self._probe(poller, incoming, rng)
                created: dict[bytes, float] = {}
                t0 = time.perf_counter()
                for i in range(o.latency_files):
                    delay = t0 + i * o.latency_spacing_s - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    name = f"take{i:04d}.wav"
                    with open(incoming / name, "wb") as fh:
                        fh.write(rng.randbytes(4096))
                    created[f"incoming/{name}".encode()] = time.time()
                deadline = time.monotonic() + 20 + 2 * o.settle_seconds
                while time.monotonic() < deadline and not all(k in poller.seen for k in created):
                    time.sleep(0.05)
            finally:
                poller.stop()
        self.collect_profile("latency")

        settle = o.settle_seconds
        visible = [(poller.seen[k][0] - t - settle) * 1000 for k, t in created.items() if k in poller.seen]
        stamped = [(poller.seen[k][1] - t - settle) * 1000 for k, t in created.items() if k in poller.seen]
        lost = len(created) - len(visible)
        if not visible:
            raise BenchError("no created file was registered")
        self.report.figures["latency"] = {
            "files": len(created),
            "not_registered": lost,
            "spacing_s": o.latency_spacing_s,
            "settle_seconds": settle,
            "visible_ms": _dist(visible),
            "first_seen_ms": _dist(stamped),
            "poll_interval_ms": poller.interval * 1000,
            "idle_memory_kb": idle,
        }
        self.report.checks += [
            Check(f"create -> registered, minus settle ({len(created)} files): p50", percentile(visible, 50),
                  "ms", Target("value_at_most", 300)),
            Check("  p99", percentile(visible, 99), "ms", INFO),
            Check("  p50 by catalog first_seen", percentile(stamped, 50), "ms", INFO),
            Check("daemon RSS idle, empty root, after start-up (VmRSS)", _mb(idle["VmRSS"]), "MB", INFO,
                  note="what every figure above starts from: interpreter, libraries, caches"),
        ]  # fmt: skip
        if lost:
            self.report.failures["latency_lost"] = f"{lost} of {len(created)} files never registered"

    def _wait_watching(self, daemon: DaemonRun, root: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = daemon.status()
            if any(r["name"] == root and r["state"] == "watching" for r in st["roots"]):
                return
            time.sleep(0.1)
        raise BenchError(f"root {root} never reached state 'watching'")

    def _probe(self, poller: CatalogPoller, folder: Path, rng: random.Random) -> None:
        """The watcher thread may still be starting: create probe files until one registers."""
        for attempt in range(8):
            name = f"probe{attempt}.wav"
            (folder / name).write_bytes(rng.randbytes(4096))
            deadline = time.monotonic() + 3 + self.opts.settle_seconds
            while time.monotonic() < deadline:
                if f"incoming/{name}".encode() in poller.seen:
                    time.sleep(0.5)
                    return
                time.sleep(0.05)
        raise BenchError("probe files never registered: is the watcher running?")


def _dist(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
    }


class CatalogPoller:
    """Reads the catalog read-only every few ms and stamps each new file row with the wall clock
    it became visible (and its first_seen). The rows are found by id > the last seen, so each
    poll is an index range scan, cheap next to the daemon's own work."""

    def __init__(self, db: Path, interval: float = 0.005) -> None:
        self.db = db
        self.interval = interval
        self.seen: dict[bytes, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-catalog-poll", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.error:
            raise BenchError(f"catalog poller: {self.error}")

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error as exc:
            self.error = str(exc)
            return
        last_id = 0
        try:
            while not self._stop.is_set():
                try:
                    rows = conn.execute(
                        "SELECT id, relpath, first_seen FROM files WHERE id > ? ORDER BY id", (last_id,)
                    ).fetchall()
                except sqlite3.OperationalError:
                    rows = []  # locked for a moment by a checkpoint: try again
                now = time.time()
                for row_id, relpath, first_seen in rows:
                    last_id = max(last_id, row_id)
                    self.seen.setdefault(bytes(relpath), (now, float(first_seen)))
                time.sleep(self.interval)
        finally:
            conn.close()


METHOD_NOTES = [
    "caches: the page cache is warm for both sides; every tree was just written and fits in RAM, "
    "and `find` ran once over it before each side. Caches are not dropped (that needs root and "
    "disturbs the host), so these are warm-cache figures for importd and the baselines alike. "
    "Before the first cold run the daemon's modules are imported once, for the same reason.",
    "cold: the time from `importd run` being spawned until the reconcile's completion line "
    "(logged after the catalog writer flushed); status then confirms present == N and empty "
    "queues. Each run (three by default; figures.cold.runs lists them) is a new process on a new "
    "catalog; the medians are judged, against the median of the baseline's runs before and after. "
    "Memory and CPU are read once the root is up (its follow-up reconcile behind the watch done). "
    "The reconcile figure is the start-up run's finished - started (`importctl runs`, ms "
    "precision). A root's first import is read before its watch is placed and followed by a "
    "second, stat-only reconcile behind the watch; status.last_scan may show that one instead.",
    "restart: the same catalog and tree, a new process; counters.hashed_files must stay 0.",
    "big file: b3sum uses mmap and all cores by default; its runs are interleaved with the "
    "daemon's. The judged figure is a running daemon re-hashing the file after a touch (`importctl "
    "scan` on a poll root), timed by last_scan (walk + settle check + identify + hash + commit). "
    "A fresh daemon per run (hashed by its start-up reconcile) is shown too: on some machines "
    "the first read of the file by a new process is slower than later ones, which hash_file's "
    "first call shows as well (hash_file_direct_first_s). The file is written in 16 MiB blocks, "
    "so the page cache holds it in large folios: b3sum's mmap then costs almost no system time "
    "(0.01 s per 2 GiB here), while any read() copies (0.16 s of one core per 2 GiB). "
    "Medians; digests are checked against b3sum.",
    "latency: files are written one by one into an existing folder of a watched root at a fixed "
    "spacing; a thread polls the catalog SQLite read-only every 5 ms (rows with id > last) and "
    "stamps when each path appears. latency = appeared - written (wall clock after close) - "
    "settle_seconds. 'by first_seen' uses the daemon's own first_seen stamp (taken when the "
    "writer starts the batch) instead of the poll.",
]


def figures_of(report: CoreReport) -> dict[str, Any]:
    return {
        "figures": report.figures,
        "checks": [c.as_dict() for c in report.checks],
        "failures": report.failures,
        "profiles": report.profiles,
        "notes": report.notes,
    }


def find_importd() -> Path:
    here = Path(sys.executable).parent / "importd"
    if here.exists():
        return here
    found = shutil.which("importd")
    if found is None:
        raise BenchError("importd not found next to this Python nor on PATH (run `make install`)")
    return Path(found)


__all__ = [
    "BenchError",
    "CatalogPoller",
    "CoreBench",
    "CoreOptions",
    "CoreReport",
    "DaemonRun",
    "figures_of",
    "find_importd",
    "make_tree",
    "summarize_profile",
]
