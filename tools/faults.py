"""Fault injection (`make faults`): the real daemon (SQLite catalog) under each fault, `status`
asked every 200 ms throughout by a poller thread over the real socket, then the catalog checked.

Faults: the state dir's filesystem full (a small tmpfs) and then freed; EIO on reads (a FUSE
passthrough that fails chosen files and folders); EACCES (mode 000, the daemon without
CAP_DAC_OVERRIDE); a root unmounted in the middle of its cold import; the catalog file locked by
another process (`BEGIN EXCLUSIVE`, then `PRAGMA locking_mode=EXCLUSIVE`); SIGSTOP and SIGCONT of
the daemon, with the sd_notify watchdog pings it sends recorded.

For each: the share of `status` calls answered while the fault lasts and their p99 (measured in
the client), the rows committed before the fault that are gone or changed after it (target 0),
what the operator sees (the status warning, the `importctl errors` line), and the time from the
end of the fault until every file written meanwhile is catalogued and the warnings have cleared.
Each broken expectation is a violation; the exit status is 1 when there is any. Needs root
(tmpfs and FUSE mounts; the EIO fault needs `fusermount3`/libfuse3 and the mfusepy package).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importctl.client import Client, ClientError

BIN = Path(sys.executable).parent
POLL_S = 0.2
ANSWER_S = 2.0  # the poller's client timeout: a `status` slower than this is not answered
RECOVER_S = 90.0
HELP_LINK = "sqlalche.me"  # SQLAlchemy's "Background on this error at: https://sqlalche.me/..."


@dataclass
class Sample:
    phase: str
    ok: bool
    seconds: float  # the call's latency
    started: float  # time.monotonic() at the call
    warnings: list[str]
    error: str = ""


class Poller(threading.Thread):
    """`status` every POLL_S over the real socket, each answer or failure kept with its phase."""

    def __init__(self, sock: Path) -> None:
        super().__init__(name="status-poller", daemon=True)
        self.sock = sock
        self.phase = "before"
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def run(self) -> None:
        client = Client(self.sock, timeout=ANSWER_S)
        while not self._done.is_set():
            phase, t0 = self.phase, time.monotonic()
            try:
                reply = client.status()
            except ClientError as exc:
                self.samples.append(Sample(phase, False, time.monotonic() - t0, t0, [], str(exc)))
            else:
                self.samples.append(Sample(phase, True, time.monotonic() - t0, t0, list(reply["warnings"])))
            self._done.wait(max(0.0, POLL_S - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=ANSWER_S + 1)

    def during(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]

    def warnings(self, phase: str) -> list[str]:
        return sorted({w for s in self.during(phase) for w in s.warnings})


@dataclass
class Outcome:
    """One fault's figures and what broke."""

    fault: str
    polls: int = 0
    answered: float = 0.0  # share of `status` calls answered during the fault
    p99_ms: float = 0.0
    rows_before: int = 0
    lost: int = 0
    recover_s: float | None = None
    watchdog_gap_s: float | None = None
    seen: list[str] = field(default_factory=list)  # what the operator saw: warnings, error lines
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def judge_polls(self, samples: list[Sample], must_answer: bool = True) -> None:
        self.polls = len(samples)
        ok = [s.seconds for s in samples if s.ok]
        self.answered = len(ok) / len(samples) if samples else 0.0
        self.p99_ms = 1000 * (statistics.quantiles(ok, n=100)[98] if len(ok) > 1 else (ok[0] if ok else 0.0))
        if must_answer and self.answered < 1.0:
            failed = [s.error for s in samples if not s.ok]
            self.violations.append(f"status unanswered {len(failed)} of {len(samples)} times: {failed[:1]}")

    def check_no_help_links(self, texts: list[str]) -> None:
        linked = [t for t in texts if HELP_LINK in t]
        if linked:
            self.violations.append(f"a message carries a library help link: {linked[0]}")


class Daemon:
    """One importd process with its own config, catalog and socket under `base`."""

    def __init__(
        self, base: Path, roots: dict[str, Path], state: Path | None = None, extra: str = ""
    ) -> None:
        self.base = base
        self.roots = roots
        self.state = state or base / "state"
        self.socket = base / "run" / "control.sock"
        self.db = self.state / "catalog.db"
        self.log = base / "importd.log"
        self.config = base / "importd.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            textwrap.dedent(
                f"""\
                settle_seconds = 0.3
                hash_workers = 2
                log_level = "info"
                state_dir = {json.dumps(str(self.state))}
                [catalog]
                url = {json.dumps(f"sqlite:///{self.db}")}
                [control]
                socket = {json.dumps(str(self.socket))}
                [media]
                enabled = false
                """
            )
            + extra
            + "".join(
                f"[[roots]]\nname = {json.dumps(n)}\npath = {json.dumps(str(p))}\n" for n, p in roots.items()
            ),
            encoding="utf-8",
        )

    def start(self, drop_dac: bool = False, env: dict[str, str] | None = None) -> Daemon:
        clean = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "IMPORTD_CATALOG_URL")}
        cmd = [str(BIN / "importd"), "run", "--config", str(self.config)]
        if drop_dac:  # root ignores permission bits; without these two capabilities it obeys them
            caps = "-dac_override,-dac_read_search"
            cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env={**clean, **(env or {})}
            )
        wait_for(lambda: self.socket.exists() and self.status()["roots"], 60, "the daemon's socket")
        return self

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return dict(self.client().status())

    def idle(self) -> bool:
        s = self.status()
        q = s["queue"]
        busy = q["settling"] or q["hashing"] or q["writing"] or q.get("mapping", 0)
        return not busy and not any(r["state"] == "scanning" for r in s["roots"])

    def wait_idle(self, timeout: float = 60.0) -> None:
        wait_for(self.idle, timeout, "the daemon idle")
        time.sleep(0.1)
        wait_for(self.idle, timeout, "the daemon idle")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "importctl"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def errors(self) -> list[dict[str, Any]]:
        res = self.ctl("errors", "--json")
        return list(json.loads(res.stdout)) if res.returncode == 0 else []

    def rows(self) -> dict[int, tuple[bytes, str | None, str]]:
        """Every file row: id -> (relpath, blake3, status), read beside the daemon."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return {
                i: (bytes(rel), b3, st)
                for i, rel, b3, st in conn.execute("SELECT id, relpath, blake3, status FROM files")
            }
        finally:
            conn.close()

    def present(self) -> set[bytes]:
        return {rel for rel, _b3, st in self.rows().values() if st == "present"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # the daemon between states: ask again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}: last={last!r}")


def lost_rows(
    before: dict[int, tuple[bytes, str | None, str]], after: dict[int, tuple[bytes, str | None, str]]
) -> list[str]:
    """Rows committed before the fault that are gone, or whose path or hash changed, or that are
    no longer present though their file is still there (every fault here leaves the files be)."""
    out = []
    for row_id, (rel, digest, st) in before.items():
        now = after.get(row_id)
        if now is None:
            out.append(f"{rel!r}: row {row_id} deleted")
        elif now[:2] != (rel, digest) or (st == "present" and now[2] != "present"):
            out.append(f"{rel!r}: was {(rel, digest, st)}, now {now}")
    return out


def write_files(root: Path, prefix: str, count: int, size: int = 2048) -> list[bytes]:
    names = []
    for i in range(count):
        rel = f"{prefix}{i:04d}.bin"
        (root / rel).write_bytes(os.urandom(size))
        names.append(rel.encode())
    return names


def recovered(
    d: Daemon, wanted: set[bytes], t_end: float, outcome: Outcome, clear: Callable[[], bool]
) -> None:
    """Wait until every `wanted` file is present and `clear()` holds; the time since `t_end`."""
    try:
        wait_for(lambda: wanted <= d.present() and clear(), RECOVER_S, "recovery")
    except TimeoutError:
        missing = sorted(wanted - d.present())[:3]
        outcome.violations.append(f"not recovered within {RECOVER_S:.0f} s (not catalogued: {missing}…)")
        return
    outcome.recover_s = time.monotonic() - t_end


def no_warnings(d: Daemon) -> bool:
    return not d.status()["warnings"]


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "importd-fault", str(path)], check=True)


def unmount(path: Path, lazy: bool = False) -> None:
    if not lazy:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)  # busy: a file still open in it
    subprocess.run(["umount", "-l", str(path)], check=True)


# ----- the faults ---------------------------------------------------------------------------------


def state_dir_full(work: Path, hold_s: float) -> Outcome:
    """The catalog's filesystem (a 4 MiB tmpfs) filled to the last byte while files arrive, then
    freed: writes wait and are retried, status and `importctl errors` say the disk is full."""
    out = Outcome("state dir full")
    root, state = work / "root", work / "state"
    root.mkdir(parents=True)
    mount_tmpfs(state, "4m")
    d = Daemon(work / "d", {"legacy": root}, state=state)
    poller = None
    try:
        write_files(root, "before", 40)
        d.start().wait_idle()
        before = d.rows()
        out.rows_before = len(before)
        poller = Poller(d.socket)
        poller.start()
        filler = state / "filler"
        with open(filler, "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        with contextlib.suppress(OSError), open(state / "filler2", "wb") as fh:  # the last blocks
            while True:
                fh.write(b"\0" * 512)
                fh.flush()
        poller.phase = "fault"
        t0 = time.monotonic()
        during = write_files(root, "during", 30)
        errors: list[dict[str, Any]] = []
        try:
            wait_for(lambda: any("disk is full" in w for w in d.status()["warnings"]), 30, "the warning")
            errors = wait_for(lambda: [e for e in d.errors() if e["kind"] == "catalog"], 10, "an errors line")
        except TimeoutError as exc:
            out.violations.append(str(exc))
        out.seen = [e["error"] for e in errors]
        time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
        out.seen += poller.warnings("fault")
        (state / "filler").unlink()
        (state / "filler2").unlink(missing_ok=True)
        poller.phase = "after"
        t_end = time.monotonic()
        recovered(
            d, {*before_paths(before), *during}, t_end, out, lambda: no_warnings(d) and not catalog_errors(d)
        )
        out.judge_polls(poller.during("fault"))
        out.check_no_help_links(out.seen)
        if not any("disk is full" in s for s in out.seen):
            out.violations.append(f"the disk-full condition was not shown: {out.seen}")
        gone = lost_rows(before, d.rows())
        out.lost = len(gone)
        out.violations += gone[:5]
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
        unmount(state)
    return out


def before_paths(rows: dict[int, tuple[bytes, str | None, str]]) -> set[bytes]:
    return {rel for rel, _b3, st in rows.values() if st == "present"}


def catalog_errors(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.errors() if e["kind"] == "catalog"]


# Another process takes the catalog's lock and keeps it until its standard input closes:
# `begin` a write transaction left open; `exclusive-mode` PRAGMA locking_mode=EXCLUSIVE, which a
# write then holds past its commit, for readers too. It says "locked", or "refused: why".
LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
if sys.argv[2] == "exclusive-mode":
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        conn.execute("BEGIN EXCLUSIVE")
        break
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline:
            print(f"refused: {exc}", flush=True)
            sys.exit(1)
        time.sleep(0.02)
conn.execute("CREATE TABLE IF NOT EXISTS fault_lock (x)")
if sys.argv[2] == "exclusive-mode":
    conn.execute("COMMIT")
    conn.execute("SELECT count(*) FROM files").fetchone()
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def catalog_lock(db: Path, mode: str, patience_s: float) -> Iterator[str]:
    """Another process holding the catalog's lock while inside; yields "locked" or "refused: …"."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db), mode, str(patience_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        yield holder.stdout.readline().strip()
    finally:
        holder.stdin.close()
        holder.stdout.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def catalog_locked(work: Path, hold_s: float) -> Outcome:
    """Another process holds a write transaction on the catalog (`BEGIN EXCLUSIVE`) while files
    arrive: readers go on (WAL), the writer waits and retries, status says the catalog is locked."""
    out = Outcome("catalog locked (BEGIN EXCLUSIVE)")
    root = work / "root"
    root.mkdir(parents=True)
    d = Daemon(work / "d", {"legacy": root})
    poller = None
    try:
        write_files(root, "before", 40)
        d.start().wait_idle()
        before = d.rows()
        out.rows_before = len(before)
        poller = Poller(d.socket)
        poller.start()
        with catalog_lock(d.db, "begin", 10.0) as got:
            if got != "locked":
                out.violations.append(f"the lock could not be taken: {got}")
            poller.phase = "fault"
            t0 = time.monotonic()
            during = write_files(root, "during", 30)
            try:
                wait_for(
                    lambda: any("locked" in w for w in d.status()["warnings"]), hold_s + 30, "the warning"
                )
                out.seen += [e["error"] for e in catalog_errors(d)]
            except TimeoutError as exc:
                out.violations.append(str(exc))
            time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
            out.seen += poller.warnings("fault")
            poller.phase = "after"
        t_end = time.monotonic()
        recovered(d, {*before_paths(before), *during}, t_end, out, lambda: clear(d))
        out.judge_polls(poller.during("fault"))
        out.check_no_help_links(out.seen)
        if not any("locked by another process" in s for s in out.seen):
            out.violations.append(f"the lock was not shown: {out.seen}")
        gone = lost_rows(before, d.rows())
        out.lost = len(gone)
        out.violations += gone[:5]
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
    return out


def catalog_locked_exclusive_mode(work: Path, hold_s: float) -> Outcome:
    """`PRAGMA locking_mode=EXCLUSIVE` in another process: refused while importd has the catalog
    open (WAL); taken while importd is down, importd's start exits 75 with one line (systemd
    restarts it) until the lock is let go; then everything written meanwhile is catalogued."""
    out = Outcome("catalog locked (locking_mode=EXCLUSIVE)")
    root = work / "root"
    root.mkdir(parents=True)
    d = Daemon(work / "d", {"legacy": root})
    poller = None
    try:
        write_files(root, "before", 40)
        d.start().wait_idle()
        before = d.rows()
        out.rows_before = len(before)
        poller = Poller(d.socket)
        poller.start()
        poller.phase = "fault"
        t0 = time.monotonic()
        with catalog_lock(d.db, "exclusive-mode", min(hold_s, 5.0)) as got:
            out.notes.append(f"taken while importd runs: {got}")
            if got == "locked":
                out.violations.append("another process took the catalog exclusively from under importd")
        during = write_files(root, "during", 10)
        time.sleep(max(0.0, min(hold_s, 5.0) - (time.monotonic() - t0)))
        poller.phase = "after"
        poller.stop()
        out.judge_polls(poller.during("fault"))
        d.stop()
        with catalog_lock(d.db, "exclusive-mode", 5.0) as got:
            if got != "locked":
                out.violations.append(f"the lock could not be taken with importd down: {got}")
            during += write_files(root, "down", 10)
            t1 = time.monotonic()
            started = subprocess.run(
                [str(BIN / "importd"), "run", "--config", str(d.config)],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
            )
            line = started.stderr.strip().splitlines()[-1:] or [""]
            out.seen.append(
                f"start-up: exit {started.returncode} after {time.monotonic() - t1:.1f} s: {line[0]}"
            )
            if started.returncode != 75 or len(started.stderr.strip().splitlines()) != 1:
                out.violations.append(
                    f"start-up on a locked catalog: exit {started.returncode}: {started.stderr[-300:]}"
                )
        t_end = time.monotonic()
        d.start()
        recovered(d, {*before_paths(before), *during}, t_end, out, lambda: clear(d))
        out.check_no_help_links(out.seen)
        gone = lost_rows(before, d.rows())
        out.lost = len(gone)
        out.violations += gone[:5]
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
    return out


def clear(d: Daemon) -> bool:
    """No warning in status and no catalog condition in `importctl errors`."""
    return no_warnings(d) and not catalog_errors(d)


EIOFS = Path(__file__).resolve().parent / "eiofs.py"


def fuse_missing() -> str | None:
    """Why the EIO fault cannot run here, or None."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401  (loads libfuse)
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse ({exc}): apt-get install fuse3; pip install mfusepy"
    return None


@contextlib.contextmanager
def eio_mount(backing: Path, mountpoint: Path, faults: Path) -> Iterator[None]:
    """tools/eiofs.py serving `backing` at `mountpoint`, failing what `faults` lists with EIO."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    faults.touch()
    log = open(mountpoint.parent / "eiofs.log", "ab")  # noqa: SIM115  (handed to the child)
    proc = subprocess.Popen(
        [sys.executable, str(EIOFS), str(backing), str(mountpoint), str(faults)], stdout=log, stderr=log
    )
    log.close()
    try:
        wait_for(lambda: os.path.ismount(mountpoint) or proc.poll() is not None, 20, "the FUSE mount")
        if proc.poll() is not None:
            raise RuntimeError(
                f"eiofs exited {proc.returncode}: {(mountpoint.parent / 'eiofs.log').read_text()[-300:]}"
            )
        yield
    finally:
        if os.path.ismount(mountpoint):
            unmount(mountpoint)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def eio_reads(work: Path, hold_s: float) -> Outcome:
    """A root on a FUSE passthrough whose chosen files fail with EIO when read and a folder (already
    catalogued) whose listing fails with EIO, while a second root takes new files: the failing files
    are `error` rows and the folder an unreadable one in `importctl errors`, nothing under it is
    marked missing; healed, a scan brings them in and the errors clear."""
    out = Outcome("EIO on reads (FUSE)")
    backing, mount, plain = work / "backing", work / "mnt", work / "plain"
    for folder in (backing / "shelf", plain):
        folder.mkdir(parents=True)
    faults = work / "eio.list"
    d = Daemon(work / "d", {"disk": mount, "plain": plain})
    poller = None
    with eio_mount(backing, mount, faults):
        try:
            write_files(backing / "shelf", "kept", 20)
            write_files(backing, "before", 10)
            d.start().wait_idle()
            before = d.rows()
            out.rows_before = len(before)
            poller = Poller(d.socket)
            poller.start()
            poller.phase = "fault"
            bad = write_files(backing, "bad", 3, size=300_000)  # one small-file batch, two streamed
            bad.append(write_files(backing, "huge", 1, size=20 << 20)[0])  # the parallel big-file path
            faults.write_text("".join(f"{n.decode()}\n" for n in bad) + "shelf\n")
            good = write_files(backing, "good", 10)
            during = write_files(plain, "during", 20)
            t0 = time.monotonic()
            d.ctl("scan", "disk", "--wait")
            errors = wait_for(lambda: eio_errors(d, len(bad) + 1), 30, "the EIO errors listed")
            out.seen += sorted({f"{e['kind']}: {e['error']}" for e in errors})
            time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
            shelf = {rel for rel, _b3, st in before.values() if rel.startswith(b"shelf/")}
            if not shelf <= d.present():
                out.violations.append(
                    f"files under the unreadable folder not present: {sorted(shelf - d.present())[:3]}"
                )
            out.seen += [w for w in poller.warnings("fault")]
            poller.phase = "after"
            faults.write_text("")
            t_end = time.monotonic()
            d.ctl("scan", "disk", "--wait")
            wanted = {*before_paths(before), *bad, *good} | {*during}
            recovered(d, wanted, t_end, out, lambda: not d.errors() and no_warnings(d))
            out.judge_polls(poller.during("fault"))
            out.check_no_help_links(out.seen)
            if not any("input/output error" in s.lower() for s in out.seen):
                out.violations.append(f"EIO was not shown: {out.seen}")
            gone = lost_rows(before, d.rows())
            out.lost = len(gone)
            out.violations += gone[:5]
        finally:
            if poller is not None:
                poller.stop()
            d.stop()
    return out


def eio_errors(d: Daemon, count: int) -> list[dict[str, Any]]:
    """`importctl errors` once it lists `count` EIO failures, else nothing."""
    errors = [e for e in d.errors() if "input/output error" in (e["error"] or "").lower()]
    return errors if len(errors) >= count else []


def eacces_reads(work: Path, hold_s: float) -> Outcome:
    """Files and a folder of mode 000 under a daemon that obeys permission bits (root without
    CAP_DAC_OVERRIDE, as the importd user of the unit is): `error` rows and an unreadable folder
    with "Permission denied"; made readable again, they come in by themselves (IN_ATTRIB)."""
    out = Outcome("EACCES on reads (mode 000)")
    root = work / "root"
    (root / "shelf").mkdir(parents=True)
    d = Daemon(work / "d", {"legacy": root})
    poller = None
    try:
        write_files(root / "shelf", "kept", 10)
        write_files(root, "before", 10)
        d.start(drop_dac=True).wait_idle()
        before = d.rows()
        out.rows_before = len(before)
        poller = Poller(d.socket)
        poller.start()
        poller.phase = "fault"
        t0 = time.monotonic()
        (root / "shelf").chmod(0o000)
        locked = []
        for i in range(3):
            path = root / f"locked{i}.bin"
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o000)  # never readable, even for a moment
            os.write(fd, os.urandom(4000))
            os.close(fd)
            locked.append(path.name.encode())
        good = write_files(root, "good", 10)
        d.ctl("scan", "legacy", "--wait")
        denied = lambda: [e for e in d.errors() if "permission denied" in (e["error"] or "").lower()]  # noqa: E731
        errors = wait_for(lambda: len(denied()) >= len(locked) + 1 and denied(), 30, "the EACCES errors")
        out.seen += sorted({f"{e['kind']}: {e['error']}" for e in errors})
        time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
        shelf = {rel for rel, _b3, st in before.values() if rel.startswith(b"shelf/")}
        if not shelf <= d.present():
            out.violations.append(
                f"files under the unreadable folder not present: {sorted(shelf - d.present())[:3]}"
            )
        poller.phase = "after"
        t_end = time.monotonic()
        (root / "shelf").chmod(0o755)
        for name in locked:
            (root / name.decode()).chmod(0o644)
        recovered(
            d, {*before_paths(before), *locked, *good}, t_end, out, lambda: not d.errors() and no_warnings(d)
        )
        out.judge_polls(poller.during("fault"))
        out.check_no_help_links(out.seen)
        gone = lost_rows(before, d.rows())
        out.lost = len(gone)
        out.violations += gone[:5]
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
    return out


@contextlib.contextmanager
def tmpfs_root(path: Path, files: dict[str, int], size: str = "96m") -> Iterator[None]:
    """A new tmpfs at `path`, filled before it appears there (mounted beside it, then bound in
    place), as a share is mounted whole: `files` is {folder: count} of 4 KiB files."""
    staging = path.parent / f".{path.name}.staging"
    mount_tmpfs(staging, size)
    try:
        for folder, count in files.items():
            (staging / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (staging / folder / f"f{i:05d}.bin").write_bytes(i.to_bytes(4, "big") * 256)
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(staging), str(path)], check=True)
    finally:
        unmount(staging, lazy=True)
    try:
        yield
    finally:
        if os.path.ismount(path):
            unmount(path, lazy=True)


def unmounted_mid_walk(work: Path, hold_s: float, folders: int = 40) -> Outcome:
    """A root that is a mount of its own, unmounted (`umount -l`) in the middle of its cold
    import: what was committed stays, nothing is marked missing, status warns; mounted again
    with the same files and more, everything is present and the warning clears."""
    out = Outcome("root unmounted mid-walk")
    root = work / "root"
    tree = {f"shelf{i:02d}": 500 for i in range(folders)}  # 40 x 500: a cold import of seconds
    d = Daemon(work / "d", {"legacy": root})
    poller = None
    try:
        with tmpfs_root(root, tree):
            d.start()
            poller = Poller(d.socket)
            poller.start()
            wait_for(lambda: d.status()["counters"]["registered"] >= 100, 60, "the cold import under way")
            before = d.rows()
            poller.phase = "fault"
            t0 = time.monotonic()
            unmount(root, lazy=True)
            scanning = d.status()["roots"][0]["state"]
            total = 500 * folders
            out.notes.append(f"unmounted with {len(before)} of {total} rows committed, the root {scanning}")
        out.rows_before = len(before)
        try:
            wait_for(lambda: d.status()["roots"][0]["state"] == "offline", 30, "the root offline")
        except TimeoutError as exc:
            out.violations.append(str(exc))
        with contextlib.suppress(TimeoutError):
            wait_for(d.idle, 60, "the daemon idle")
        time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
        # The poller's last sample may predate the root going offline (the waits above can outlast
        # hold_s): give it time to take one after.
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: any("mount point" in w for w in poller.warnings("fault")), 10, "the warning sampled"
            )
        out.seen += poller.warnings("fault")
        missing = [rel for rel, _b3, st in d.rows().values() if st == "missing"]
        if missing:
            out.violations.append(f"{len(missing)} rows marked missing while unmounted: {missing[:3]}")
        if not any("mount point" in w for w in out.seen):
            out.violations.append(f"no warning that the root is unmounted: {out.seen}")
        poller.phase = "after"
        t_end = time.monotonic()
        with tmpfs_root(root, {**tree, "new": 20}):
            wanted = {
                f"{folder}/f{i:05d}.bin".encode()
                for folder, n in {**tree, "new": 20}.items()
                for i in range(n)
            }
            recovered(d, wanted, t_end, out, lambda: no_warnings(d) and d.idle())
            missing = [rel for rel, _b3, st in d.rows().values() if st == "missing"]
            if missing:
                out.violations.append(f"{len(missing)} rows missing after the remount: {missing[:3]}")
            out.judge_polls(poller.during("fault"))
            gone = lost_rows(before, d.rows())
            out.lost = len(gone)
            out.violations += gone[:5]
            d.stop()
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
    return out


class WatchdogListener(threading.Thread):
    """The daemon's $NOTIFY_SOCKET, as systemd's: the times of its WATCHDOG=1 pings."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="notify-socket", daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.pings: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings.append(time.monotonic())

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=2)
        self.sock.close()

    def longest_gap(self, since: float) -> float:
        earlier = [t for t in self.pings if t < since]
        times = earlier[-1:] + [t for t in self.pings if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


UNIT_WATCHDOG_S = 30.0  # units/importd.service: WatchdogSec=30
PING_WATCHDOG_USEC = 2_000_000  # here: a ping every second, so a gap is seen to the second


def stopped(work: Path, hold_s: float) -> Outcome:
    """SIGSTOP for `hold_s`, files created meanwhile (at 60 s, more events than the kernel's
    inotify queue holds: an overflow, then a reconcile), then SIGCONT: status answers again at
    once, everything made during the stop is catalogued, and the watchdog pings resume. Under
    systemd (WatchdogSec=30) a stop longer than 30 s gets the daemon killed and restarted."""
    out = Outcome(f"SIGSTOP {hold_s:.0f} s, SIGCONT")
    root = work / "root"
    root.mkdir(parents=True)
    d = Daemon(work / "d", {"legacy": root})
    poller = None
    listener = WatchdogListener(work / "notify.sock")
    listener.start()
    try:
        write_files(root, "before", 40)
        d.start(env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(PING_WATCHDOG_USEC)})
        d.wait_idle()
        before = d.rows()
        out.rows_before = len(before)
        poller = Poller(d.socket)
        poller.start()
        assert d.proc is not None
        since = time.monotonic()
        os.kill(d.proc.pid, signal.SIGSTOP)
        poller.phase = "fault"
        t0 = time.monotonic()
        # In a watched folder, each file is three events (create, modify, close-write): on a long
        # stop, more than the kernel's queue holds (fs.inotify.max_queued_events, 16,384 by
        # default), so it overflows. A folder made meanwhile has no watch yet: it is walked.
        count = 20 if hold_s < 30 else 6000
        during = write_files(root, "during", count, 256)
        (root / "made while stopped").mkdir()
        during += [b"made while stopped/" + n for n in write_files(root / "made while stopped", "s", 10)]
        time.sleep(max(0.0, hold_s - (time.monotonic() - t0)))
        poller.phase = "after"
        os.kill(d.proc.pid, signal.SIGCONT)
        t_end = time.monotonic()
        try:
            wait_for(lambda: d.client(timeout=ANSWER_S).status(), 30, "status after SIGCONT")
            out.notes.append(f"status answered {time.monotonic() - t_end:.2f} s after SIGCONT")
        except TimeoutError as exc:
            out.violations.append(str(exc))
        recovered(d, {*before_paths(before), *during}, t_end, out, lambda: d.idle() and no_warnings(d))
        wait_for(lambda: listener.pings and listener.pings[-1] > t_end, 10, "a watchdog ping after SIGCONT")
        gap = listener.longest_gap(since)
        killed = "yes" if gap > UNIT_WATCHDOG_S else "no"
        out.notes.append(
            f"longest gap between WATCHDOG=1 pings {gap:.1f} s (one a second otherwise); under the unit"
            f" (WatchdogSec={UNIT_WATCHDOG_S:.0f}) systemd would have killed and restarted it: {killed}"
        )
        out.watchdog_gap_s = gap
        triggers = d.ctl("runs", "--json")
        if triggers.returncode == 0:
            out.notes.append(
                "runs: " + ", ".join(sorted({r["trigger"] for r in json.loads(triggers.stdout)}))
            )
        answered = poller.during("after")
        out.judge_polls([s for s in answered if s.ok] or answered)
        stopped_polls = poller.during("fault")
        out.notes.append(
            f"while stopped: {sum(s.ok for s in stopped_polls)} of {len(stopped_polls)} status calls answered"
        )
        gone = lost_rows(before, d.rows())
        out.lost = len(gone)
        out.violations += gone[:5]
    finally:
        if poller is not None:
            poller.stop()
        d.stop()
        listener.stop()
    return out


FAULTS: dict[str, Callable[[Path, float], Outcome]] = {
    "full": state_dir_full,
    "eio": eio_reads,
    "eacces": eacces_reads,
    "unmount": unmounted_mid_walk,
    "sigstop": stopped,
    "locked": catalog_locked,
    "locked-mode": catalog_locked_exclusive_mode,
}


def table(outcomes: list[Outcome]) -> str:
    head = ("fault", "status answered", "p99 ms", "rows lost", "recovered in", "violations")
    rows = [
        (
            o.fault,
            f"{100 * o.answered:.0f} % of {o.polls}",
            f"{o.p99_ms:.0f}",
            f"{o.lost} of {o.rows_before}",
            "-" if o.recover_s is None else f"{o.recover_s:.1f} s",
            f"{len(o.violations)}",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("targets: status answered 100 % (except while stopped), rows lost 0, violations 0")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(FAULTS), help="one fault (repeatable)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each fault lasts")
    parser.add_argument("--stop", type=float, default=60.0, help="seconds the daemon stays stopped (SIGSTOP)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("faults: needs root (tmpfs and FUSE mounts)", file=sys.stderr)
        return 2
    outcomes = []
    for name in args.only or list(FAULTS):
        with tempfile.TemporaryDirectory(prefix=f"importd-fault-{name}-") as tmp:
            print(f"fault: {name} ...", flush=True)
            outcome = FAULTS[name](Path(tmp), args.stop if name == "sigstop" else args.hold)
            for line in outcome.seen:
                print(f"  seen: {line}")
            for line in outcome.notes:
                print(f"  note: {line}")
            for line in outcome.violations:
                print(f"  VIOLATION: {line}")
            outcomes.append(outcome)
    print()
    print(table(outcomes))
    return 1 if any(o.violations for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
