"""Crash trials (`make soak`): the real daemon on a generated tree, random changes, `kill -9` at
random moments, a restart, quiet, then the catalog checked against the disk.

Each trial is one seed (printed; `--trials 1 --seed S` replays it): a tree of a few hundred files
in a character layout (so the gap report has something to say) and deep folders; the daemon is
killed during its cold import, during a burst of changes, twice in a row (the second kill during
the start-up reconcile), or while down and while coming up the tree changes. After the last start
the harness waits for quiet and checks:

- every regular file on disk is in the catalog exactly once, `present`, with its BLAKE3;
- no live row (present or error) for a path that does not exist;
- no row committed before a kill is gone (rows are never deleted), and a file the trial deleted
  is `missing` (or its row moved away);
- every file row's content has its `contents` row, and no content row names bytes the trial
  never wrote (an orphan: a torn read, a hash of nothing);
- `importctl gaps --json` equals `importctl gaps --recompute --json`.

A daemon that does not answer `status` within 30 s (or does not go quiet within 240 s, or does
not stop on SIGTERM) is a violation: the harness sends it SIGUSR1 (faulthandler writes every
thread's stack to its log), runs `py-spy dump` where installed, and saves both with the seed under
--out, so a rare hang becomes a bug report. The table at the end counts trials, kills and
violations (target: 0); the exit status is 1 when there is any violation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from importctl.client import Client, ClientError

BIN = Path(sys.executable).parent
ANSWER_S = 30.0  # a daemon silent this long is hung
QUIET_S = 240.0  # a daemon busy this long after its last change is stuck
STOP_S = 15.0
STACKS_SIGNAL = signal.SIGUSR1  # importd.runtime.DUMP_STACKS_SIGNAL
LIVE = ("present", "error")
KINDS = ("cold", "burst", "double", "down")
# When a kill lands, as the table counts them.
MOMENTS = ("start-up", "cold import", "burst", "second in a row", "restart under changes")


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


class Tree:
    """The trial's tree, changed at random, and what the catalog must therefore say: every content
    ever written (`history`) and every path deleted (`deleted`)."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = os.fsencode(root)
        self.rng = rng
        self.history: set[str] = set()
        self.deleted: set[bytes] = set()
        self.counter = 0

    def _name(self, stem: str, ext: str) -> bytes:
        self.counter += 1
        return f"{stem}{self.counter}{ext}".encode()

    def _abs(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel) if rel else self.root

    def _rel(self, path: bytes) -> bytes:
        return os.path.relpath(path, self.root)

    def _blob(self) -> bytes:
        r = self.rng.random()
        if r < 0.05:
            return b""
        if r < 0.85:
            return self.rng.randbytes(self.rng.randint(1, 4096))
        if r < 0.995:
            return self.rng.randbytes(self.rng.randint(64 << 10, 512 << 10))
        return self.rng.randbytes(self.rng.randint(16 << 20, 18 << 20))  # the parallel big-file path

    def write(self, rel: bytes, data: bytes) -> None:
        with open(self._abs(rel), "wb") as fh:
            fh.write(data)
        self.history.add(b3(data))
        self.deleted.discard(rel)

    def generate(self, files: int) -> None:
        os.makedirs(self.root, exist_ok=True)
        characters = [f"Char{i:02d}".encode() for i in range(self.rng.randint(4, 10))]
        for ch in characters:
            os.makedirs(self._abs(ch), exist_ok=True)
            self.write(ch + b"/metadata.json", json.dumps({"name": ch.decode(), "age": 30}).encode())
            for scene in self.rng.sample([b"intro", b"dance", b"outro"], self.rng.randint(1, 3)):
                self.write(ch + b"/" + scene + b".mp4", self._blob())
            if self.rng.random() < 0.7:
                self.write(ch + b"/source.jpg", self._blob())
        folders = [b"misc"]
        for _ in range(self.rng.randint(5, 20)):
            parent = self.rng.choice(folders)
            folders.append(parent + b"/" + self._name("d", ""))
        for folder in folders:
            os.makedirs(self._abs(folder), exist_ok=True)
        self.write(b"misc/caf\xe9 latin-1 " + self._name("n", ".txt"), b"old share\n")
        written: list[bytes] = []
        while sum(1 for _ in self.files()) < files:
            rel = self.rng.choice(folders) + b"/" + self._name("f", self.rng.choice([".bin", ".txt", ".mp4"]))
            if written and self.rng.random() < 0.1:  # an exact duplicate
                with open(self._abs(self.rng.choice(written)), "rb") as fh:
                    self.write(rel, fh.read())
            else:
                self.write(rel, self._blob())
            written.append(rel)

    def files(self) -> Iterator[bytes]:
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield self._rel(path)

    def folders(self) -> list[bytes]:
        return [self._rel(d) for d, _, _ in os.walk(self.root) if d != self.root]

    def disk(self) -> dict[bytes, str]:
        """Every regular file's BLAKE3, read now."""
        out = {}
        for rel in self.files():
            with open(self._abs(rel), "rb") as fh:
                out[rel] = blake3.blake3(fh.read()).hexdigest()
        return out

    def change(self) -> str:
        """One random change; its kind."""
        files = sorted(self.files())
        folders = sorted(self.folders())
        kind = self.rng.choices(
            ["create", "append", "rename", "rename_folder", "move", "delete", "rmtree", "mkdir"],
            [25, 15, 12, 5, 12, 15, 3, 5],
        )[0]
        if not files or not folders:
            kind = "mkdir"
        if kind == "create":
            self.write(self.rng.choice(folders) + b"/" + self._name("c", ".bin"), self._blob())
        elif kind == "append":
            rel = self.rng.choice(files)
            with open(self._abs(rel), "ab") as fh:
                fh.write(self.rng.randbytes(self.rng.randint(1, 2048)))
            with open(self._abs(rel), "rb") as fh:
                self.history.add(b3(fh.read()))
        elif kind in ("rename", "move"):
            rel = self.rng.choice(files)
            folder = os.path.dirname(rel) if kind == "rename" else self.rng.choice(folders)
            new = os.path.join(folder, self._name("r", os.path.splitext(rel)[1].decode("latin-1")))
            os.rename(self._abs(rel), self._abs(new))
            self.deleted.discard(new)
        elif kind == "rename_folder":
            old = self.rng.choice(folders)
            new = os.path.join(os.path.dirname(old), self._name("rd", ""))
            moved = [f for f in files if f.startswith(old + b"/")]
            os.rename(self._abs(old), self._abs(new))
            for f in moved:
                self.deleted.discard(new + f[len(old) :])
        elif kind == "delete":
            rel = self.rng.choice(files)
            os.unlink(self._abs(rel))
            self.deleted.add(rel)
        elif kind == "rmtree":
            # A small folder only: a big one would be held by the brake (set high here anyway).
            small = [d for d in folders if sum(f.startswith(d + b"/") for f in files) <= 30]
            if not small:
                return self._new_folder()
            old = self.rng.choice(small)
            self.deleted.update(f for f in files if f.startswith(old + b"/"))
            shutil.rmtree(self._abs(old))
        else:
            return self._new_folder()
        return kind

    def _new_folder(self) -> str:
        """A new folder with a few files: the watcher must place a watch and rescan it."""
        folders = self.folders() or [b"misc"]
        new = self.rng.choice(folders) + b"/" + self._name("m", "")
        os.makedirs(self._abs(new), exist_ok=True)
        for _ in range(self.rng.randint(1, 8)):
            self.write(new + b"/" + self._name("f", ".bin"), self._blob())
        return "mkdir"

    def burst(self, count: int, pause: float, stop: threading.Event | None = None) -> list[str]:
        kinds = []
        for _ in range(count):
            if stop is not None and stop.is_set():
                break
            kinds.append(self.change())
            if pause:
                time.sleep(self.rng.uniform(0, pause))
        return kinds


@dataclass
class Violation:
    seed: int
    what: str
    saved: str = ""


class Daemon:
    """One importd process on the trial's catalog, its log appended to one file."""

    def __init__(self, base: Path, root: Path, catalog_url: str, media: bool = False) -> None:
        self.base = base
        self.socket = base / "run" / "control.sock"
        self.catalog_url = catalog_url
        self.log = base / "importd.log"
        self.config = base / "importd.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_busy = ""  # what the last `status` said was still going on
        self.config.write_text(
            textwrap.dedent(
                f"""\
                settle_seconds = 0.3
                hash_workers = 2
                log_level = "info"
                state_dir = {json.dumps(str(base / "state"))}
                [catalog]
                url = {json.dumps(catalog_url)}
                [control]
                socket = {json.dumps(str(self.socket))}
                [safety]
                max_vanish_files = 1000000
                max_vanish_percent = 100
                [media]
                enabled = {json.dumps(media)}
                workers = 1
                [expect.character]
                roles = ["source_image"]
                scenes = ["intro", "dance"]
                [[roots]]
                name = "legacy"
                path = {json.dumps(str(root))}
                rules = "characters"
                """
            ),
            encoding="utf-8",
        )

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "IMPORTD_CATALOG_URL")}
        with open(self.log, "ab") as logf:
            logf.write(f"--- harness: start at {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(
                [str(BIN / "importd"), "run", "--config", str(self.config)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None
        with open(self.log, "ab") as logf:
            logf.write(f"--- harness: kill -9 at {time.time():.3f}\n".encode())

    def stop(self) -> int | None:
        """SIGTERM; the exit status, or None if it did not exit within STOP_S."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            return None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        return dict(Client(self.socket, timeout=ANSWER_S if timeout is None else timeout).status())

    def wait_answering(self) -> str | None:
        """None once `status` answers; else why not (it exited, or ANSWER_S went by)."""
        deadline = time.monotonic() + ANSWER_S
        while time.monotonic() < deadline:
            rc = self.exited()
            if rc is not None:
                return f"exited with status {rc} at start-up"
            if self.socket.exists():
                with contextlib.suppress(ClientError):
                    self.status(timeout=max(0.5, deadline - time.monotonic()))
                    return None
            time.sleep(0.05)
        return f"did not answer status within {ANSWER_S:.0f} s of its start"

    def idle(self) -> bool:
        s = self.status()
        q = s["queue"]
        self.last_busy = f"queue {q}, roots {[(r['name'], r['state']) for r in s['roots']]}"
        busy = q["settling"] or q["hashing"] or q["writing"] or q.get("mapping", 0)
        return not busy and not any(r["state"] in ("scanning", "held") for r in s["roots"])

    def wait_quiet(self) -> str | None:
        """None once idle twice, 0.5 s apart; else why not. A daemon just started is first given
        ANSWER_S to bind its socket: on PostgreSQL a start takes a second or two, and a trial
        that restarted it without waiting once took "no control socket yet" for a hang."""
        why = self.wait_answering()
        if why is not None:
            return why
        deadline = time.monotonic() + QUIET_S
        streak = 0
        while time.monotonic() < deadline:
            rc = self.exited()
            if rc is not None:
                return f"exited with status {rc} while working"
            try:
                streak = streak + 1 if self.idle() else 0
            except ClientError as exc:
                return f"did not answer status within {ANSWER_S:.0f} s while working ({exc})"
            if streak >= 2:
                return None
            time.sleep(0.5 if streak else 0.1)
        return f"not quiet within {QUIET_S:.0f} s: {self.last_busy}"

    def capture_stacks(self, out: Path) -> str:
        """Every thread's stack (faulthandler, into the log; py-spy where installed) and the log
        since the last start, into `out`; its path."""
        assert self.proc is not None
        pid = self.proc.pid
        parts = [f"importd pid {pid}, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"]
        spy = shutil.which("py-spy")
        if spy:
            res = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
            parts.append(f"=== py-spy dump\n{res.stdout}{res.stderr}\n")
        else:
            parts.append("=== py-spy: not installed (pip install py-spy for native frames too)\n")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STACKS_SIGNAL)
        time.sleep(1.0)
        log = self.log.read_text(errors="replace")
        since = log.rfind("--- harness: start")
        parts.append(f"=== importd log since its last start (SIGUSR1 stacks at the end)\n{log[since:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(parts), encoding="utf-8")
        return str(out)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc's children lists), deepest last."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
                out.extend(kids)
                todo.extend(kids)
    return out


def alive(pid: int) -> str | None:
    """The command line of `pid` if it runs (not a zombie), else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def sql(url: str, query: str) -> list[tuple[Any, ...]]:
    """One read on the catalog, SQLite file or PostgreSQL."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(f"file:{url[len('sqlite:///') :]}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()
    import asyncio

    import asyncpg

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r.values()) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def ctl_json(daemon: Daemon, *args: str) -> Any:
    res = subprocess.run(
        [str(BIN / "importctl"), "--socket", str(daemon.socket), *args, "--json"],
        capture_output=True,
        timeout=ANSWER_S * 2,
    )
    if res.returncode not in (0, 1):  # gaps exits 1 when there are gaps
        raise RuntimeError(f"importctl {' '.join(args)} -> {res.returncode}: {res.stderr.decode()[:300]}")
    return json.loads(res.stdout)


def check(tree: Tree, daemon: Daemon, committed: dict[int, bytes]) -> list[str]:
    """The invariants, against the disk as it is now; each broken one as a line."""
    bad: list[str] = []
    disk = tree.disk()
    rows = sql(daemon.catalog_url, "SELECT id, relpath, status, blake3 FROM files")
    live: dict[bytes, list[tuple[int, str, str | None]]] = {}
    by_path: dict[bytes, list[str]] = {}
    ids = set()
    for row_id, relpath, status, digest in rows:
        rel = bytes(relpath)
        ids.add(row_id)
        by_path.setdefault(rel, []).append(status)
        if status in LIVE:
            live.setdefault(rel, []).append((row_id, status, digest))
    for rel, digest in sorted(disk.items()):
        found = live.get(rel, [])
        if len(found) != 1:
            bad.append(f"{rel!r}: on disk, {len(found)} live rows {found}")
        elif found[0][1] != "present" or found[0][2] != digest:
            bad.append(f"{rel!r}: on disk with {digest[:12]}, row {found[0]}")
    for rel, found in sorted(live.items()):
        if rel not in disk:
            bad.append(f"{rel!r}: not on disk, live rows {found}")
    gone = sorted(set(committed) - ids)
    if gone:
        bad.append(f"{len(gone)} rows committed before a kill were deleted: ids {gone[:10]}")
    moved_from = {bytes(r[0]) for r in sql(daemon.catalog_url, "SELECT old_relpath FROM file_moves")}
    for rel in sorted(tree.deleted & set(committed.values())):
        if rel in disk or rel in moved_from:
            continue
        if "missing" not in by_path.get(rel, []):
            bad.append(f"{rel!r}: deleted, rows {by_path.get(rel)} (none missing)")
    dangling = sql(
        daemon.catalog_url,
        "SELECT relpath, blake3 FROM files WHERE blake3 IS NOT NULL "
        "AND blake3 NOT IN (SELECT blake3 FROM contents)",
    )
    bad.extend(f"{bytes(r[0])!r}: content {r[1]} has no contents row" for r in dangling)
    unreferenced = sql(
        daemon.catalog_url,
        "SELECT blake3 FROM contents WHERE blake3 NOT IN (SELECT blake3 FROM files WHERE blake3 IS NOT NULL)",
    )
    orphans = sorted(d for (d,) in unreferenced if d not in tree.history)
    if orphans:
        bad.append(f"{len(orphans)} orphan content rows (bytes never written): {orphans[:3]}")
    live_gaps = ctl_json(daemon, "gaps")
    recomputed = ctl_json(daemon, "gaps", "--recompute")
    if live_gaps != recomputed:
        bad.append(f"gaps differ from a recomputation: live {live_gaps} recomputed {recomputed}")
    return bad


@dataclass
class TrialResult:
    seed: int
    kinds: list[str]
    media: bool
    kills: Counter[str]
    interrupted: int  # reconciles a kill cut short
    files: int
    seconds: float
    violations: list[Violation] = field(default_factory=list)
    # The daemon hit the inotify watch limit: fs.inotify.max_user_watches is machine-wide, and
    # another process (a test of that very limit) may have lowered it under the trial.
    watch_limit: bool = False


class Trial:
    def __init__(self, seed: int, base: Path, out: Path, catalog_url: str, files: int | None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.base = base
        self.out = out
        self.tree = Tree(base / "tree", self.rng)
        self.files = files or self.rng.randint(150, 400)
        # Media extraction in a share of the trials: its worker processes and ffmpeg children
        # must not outlive a kill, nor hold anything the next start waits for.
        self.media = self.rng.random() < 0.25
        self.daemon = Daemon(base, base / "tree", catalog_url, self.media)
        self.kinds: list[str] = []
        self.violations: list[Violation] = []
        self.committed: dict[int, bytes] = {}  # row id -> its path, for every row a kill left
        self.kills: Counter[str] = Counter()
        self.interrupted_runs: set[int] = set()  # runs a kill left `running`: it hit a reconcile

    def violation(self, what: str, stacks: bool = False) -> None:
        saved = ""
        if stacks and self.daemon.proc is not None and self.daemon.exited() is None:
            saved = self.daemon.capture_stacks(self.out / f"hang-seed{self.seed}-{len(self.violations)}.txt")
        self.violations.append(Violation(self.seed, what, saved))

    def start(self, answering: bool) -> bool:
        self.daemon.start()
        if not answering:
            return True
        why = self.daemon.wait_answering()
        if why is not None:
            self.violation(why, stacks=True)
            return False
        return True

    def kill(self, moment: str) -> None:
        assert moment in MOMENTS
        children: list[int] = []
        if self.daemon.exited() is None:
            self.kills[moment] += 1
            assert self.daemon.proc is not None
            children = descendants(self.daemon.proc.pid)
        self.daemon.kill()
        # Its media workers and ffmpeg must go with it: one left behind holds memory, files and
        # CPU that the next start competes with.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(alive(c) for c in children):
            time.sleep(0.1)
        left = {c: alive(c) for c in children if alive(c)}
        if left:
            self.violation(f"kill -9 left {len(left)} processes behind: {list(left.values())[:3]}")
            for c in left:
                with contextlib.suppress(OSError):
                    os.kill(c, signal.SIGKILL)
        url = self.daemon.catalog_url
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
            return
        with contextlib.suppress(Exception):  # before the first migration there is no table yet
            for row_id, relpath in sql(url, "SELECT id, relpath FROM files"):
                self.committed[row_id] = bytes(relpath)
            for (run_id,) in sql(url, "SELECT id FROM runs WHERE status = 'running'"):
                self.interrupted_runs.add(run_id)

    def quiet(self) -> bool:
        why = self.daemon.wait_quiet()
        if why is not None:
            self.violation(why, stacks=True)
            return False
        return True

    def run(self) -> TrialResult:
        t0 = time.monotonic()
        rng = self.rng
        self.tree.generate(self.files)
        ok = True
        # The cold import: killed at a random moment, or left to finish.
        self.kinds.append("cold")
        if rng.random() < 0.7:
            self.daemon.start()
            if rng.random() < 0.3:  # anywhere in start-up: imports, migrations, binding
                time.sleep(rng.uniform(0.05, 1.5))
                self.kill("start-up")
            else:  # once it answers, while the import runs
                why = self.daemon.wait_answering()
                if why is not None:
                    self.violation(why, stacks=True)
                    ok = False
                time.sleep(rng.uniform(0, 0.5))
                self.kill("cold import")
        else:
            ok = self.start(answering=True) and self.quiet()
        for _ in range(rng.randint(1, 3)):
            if not ok:
                break
            kind = rng.choice(KINDS[1:])
            self.kinds.append(kind)
            ok = getattr(self, f"_{kind}")()
        if ok and self.daemon.proc is None:
            ok = self.start(answering=True)
        if ok and rng.random() < 0.5:  # a last burst the watcher must follow
            self.tree.burst(rng.randint(5, 40), 0.02)
            time.sleep(0.5)
        if ok and self.quiet():
            try:
                for line in check(self.tree, self.daemon, self.committed):
                    self.violation(line)
            except Exception as exc:
                self.violation(f"check failed: {type(exc).__name__}: {exc}", stacks=True)
            rc = self.daemon.stop()
            if rc is None:
                self.violation(f"did not exit within {STOP_S:.0f} s of SIGTERM", stacks=True)
            elif rc != 0:
                self.violation(f"exited {rc} on SIGTERM")
        if self.daemon.proc is not None:
            self.daemon.kill()
        if self.violations:
            keep = self.out / f"seed{self.seed}-importd.log"
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.daemon.log, keep)
        return TrialResult(
            self.seed,
            self.kinds,
            self.media,
            self.kills,
            len(self.interrupted_runs),
            self.files,
            time.monotonic() - t0,
            self.violations,
            b"inotify watch limit reached" in self.daemon.log.read_bytes(),
        )

    # The kinds of kill after the cold import; each returns whether the trial can go on.

    def _running(self) -> bool:
        return self.daemon.proc is not None or self.start(answering=True)

    def _burst(self) -> bool:
        """kill -9 in the middle of a burst of changes the watcher is following."""
        if not self._running():
            return False
        stop = threading.Event()
        burst = threading.Thread(target=self.tree.burst, args=(self.rng.randint(20, 120), 0.03, stop))
        delay = self.rng.uniform(0.1, 2.0)
        burst.start()
        time.sleep(delay)
        self.kill("burst")
        stop.set()
        burst.join()
        return True

    def _double(self) -> bool:
        """kill -9, restart, kill -9 again during the start-up reconcile."""
        if not self._running():
            return False
        self.tree.burst(self.rng.randint(5, 30), 0.01)
        time.sleep(self.rng.uniform(0, 0.5))
        self.kill("burst")
        self.daemon.start()
        if self.rng.random() < 0.5:  # anywhere in its start-up
            time.sleep(self.rng.uniform(0.05, 2.0))
        else:  # in its start-up reconcile
            why = self.daemon.wait_answering()
            if why is not None:
                self.violation(why, stacks=True)
                return False
            time.sleep(self.rng.uniform(0, 0.3))
        self.kill("second in a row")
        return True

    def _down(self) -> bool:
        """Changes while the daemon is down, and more while it starts again."""
        if self.daemon.proc is not None:
            self.kill("burst")
        self.tree.burst(self.rng.randint(5, 60), 0)
        self.daemon.start()
        self.tree.burst(self.rng.randint(5, 40), 0.02)
        if self.rng.random() < 0.5:
            time.sleep(self.rng.uniform(0, 1.5))
            self.kill("restart under changes")
        return True


def new_catalog(kind: str, trial_dir: Path, server: Any) -> tuple[str, Callable[[], None]]:
    if kind == "sqlite":
        return f"sqlite:///{trial_dir / 'state' / 'catalog.db'}", lambda: None
    name = server.create_database()
    return server.url(name), lambda: server.drop_database(name)


def run_trials(
    trials: int,
    seed: int,
    out: Path,
    catalog: str = "sqlite",
    files: int | None = None,
    keep: bool = False,
    echo: Callable[[str], None] = print,
) -> list[TrialResult]:
    results: list[TrialResult] = []
    cluster = server = None
    if catalog == "postgresql":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.pg import Cluster, bin_dir

        found = bin_dir()
        if found is None:
            raise SystemExit("crash: no PostgreSQL binaries (apt-get install postgresql)")
        cluster = Cluster(found)
        server = cluster.start()
    try:
        for i in range(trials):
            trial_seed = seed + i
            base = Path(tempfile.mkdtemp(prefix=f"importd-crash-{trial_seed}-"))
            url, drop = new_catalog(catalog, base, server)
            trial = Trial(trial_seed, base, out, url, files)
            try:
                result = trial.run()
            finally:
                if trial.daemon.proc is not None:  # interrupted: leave no daemon behind
                    trial.daemon.kill()
                drop()
                if not keep:
                    shutil.rmtree(base, ignore_errors=True)
            results.append(result)
            verdict = "ok" if not result.violations else f"{len(result.violations)} VIOLATION(S)"
            media = " media" if result.media else ""
            echo(
                f"trial {i + 1}/{trials} seed={trial_seed} files={result.files} kills={result.kills.total()} "
                f"[{' '.join(result.kinds)}]{media} {result.seconds:.1f}s {verdict}"
            )
            for v in result.violations:
                echo(f"  seed={v.seed}: {v.what}" + (f" (stacks: {v.saved})" if v.saved else ""))
            if result.watch_limit:
                echo(
                    "  note: the daemon hit the inotify watch limit in this trial (polling, not "
                    "watching): was fs.inotify.max_user_watches lowered by another process?"
                )
    finally:
        if cluster is not None:
            cluster.stop()
    return results


def table(results: list[TrialResult], catalog: str, wall: float) -> str:
    kills: Counter[str] = sum((r.kills for r in results), Counter())
    violations = [v for r in results for v in r.violations]
    hangs = [v for v in violations if v.saved]
    times = [r.seconds for r in results] or [0.0]
    rows = [
        ("trials", f"{len(results)}", "≥ 100 (make soak)"),
        ("kill -9", f"{kills.total()}", ""),
        ("  in " + " / ".join(MOMENTS), " / ".join(str(kills[m]) for m in MOMENTS), ""),
        ("  that cut a reconcile short (left its run running)", f"{sum(r.interrupted for r in results)}", ""),
        ("violations", f"{len(violations)}", "0"),
        (f"  of which hangs (no status in {ANSWER_S:.0f} s, not quiet, no stop)", f"{len(hangs)}", "0"),
        (
            "trials where the daemon hit the inotify watch limit (machine-wide)",
            f"{sum(r.watch_limit for r in results)}",
            "0",
        ),
        ("files per trial (median)", f"{statistics.median(r.files for r in results or []) or 0:.0f}", ""),
        ("seconds per trial (median / max)", f"{statistics.median(times):.1f} / {max(times):.1f}", ""),
        ("wall time", f"{wall / 60:.1f} min", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"crash trials on {catalog}", f"{'figure':<{width}}  {'value':>14}  target"]
    lines += [f"{name:<{width}}  {value:>14}  {target}" for name, value, target in rows]
    failed = sorted({v.seed for v in violations})
    if failed:
        lines.append("replay: " + ", ".join(f"--trials 1 --seed {s}" for s in failed))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="first trial's seed (default: from the clock)")
    parser.add_argument("--catalog", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--files", type=int, default=None, help="files per tree (default: 150-400 by seed)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/crash"), help="hang stacks and logs")
    parser.add_argument("--keep", action="store_true", help="keep each trial's tree, catalog and log")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the running trial's daemon is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000 * 1000
    print(f"crash trials: {args.trials} from seed {seed} on {args.catalog}", flush=True)
    t0 = time.monotonic()
    results = run_trials(
        args.trials,
        seed,
        args.out,
        args.catalog,
        args.files,
        args.keep,
        echo=lambda line: print(line, flush=True),
    )
    print()
    print(table(results, args.catalog, time.monotonic() - t0))
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
