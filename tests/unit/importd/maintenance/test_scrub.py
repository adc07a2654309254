"""The --verify-hash scrub: bit rot found, budgets honoured, the next sweep continuing."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import blake3
import pytest

from importd.items import FileFailure, HashedFile, HashOutcome, SettledFile, Unsettled, s64
from importd.maintenance.scrub import (
    LANE_CHUNK,
    LANE_FROM,
    LANES,
    Budget,
    BudgetError,
    Scrubber,
    ScrubPlan,
    ScrubResult,
    ScrubTarget,
    parse_budget,
)
from importd.pipeline.hasher import PIPELINE_FROM
from importd.priority import (
    IOPRIO_CLASS_IDLE,
    LOWER_BY,
    lower_thread_priority,
    run_lowered,
    sweep_nice,
    thread_io_class,
)

KiB = 1 << 10
UNLIMITED = Budget()


def target(path: Path, row_id: int, last_verified: float | None = None) -> ScrubTarget:
    """A catalog row as the pipeline would have written it for this file, now."""
    st = os.lstat(path)
    digest = blake3.blake3(path.read_bytes()).hexdigest()
    raw = os.fsencode(str(path))
    return ScrubTarget(
        row_id,
        1,
        "media",
        raw,
        raw,
        st.st_size,
        st.st_mtime_ns,
        s64(st.st_ino),
        s64(st.st_dev),
        digest,
        last_verified,
    )


class Ticks:
    """A clock that moves only when the test says so (or by `step` on every read)."""

    def __init__(self, start: float = 1000.0, step: float = 0.0) -> None:
        self.t = start
        self.step = step

    def __call__(self) -> float:
        value = self.t
        self.t += self.step
        return value


def sweep(
    targets: Iterable[ScrubTarget], budget: Budget = UNLIMITED, now: float = 5000.0
) -> tuple[Scrubber, list[ScrubResult]]:
    scrubber = Scrubber(ScrubPlan(budget, started=now), clock=Ticks(), now=Ticks(now))
    return scrubber, list(scrubber.sweep(targets))


def flip_keeping_mtime(path: Path, offset: int) -> None:
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_bit_rot_is_found_and_told_apart_from_changes(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("ok", "rot", "big_rot", "grown", "touched", "deleted")}
    for name, path in files.items():
        path.write_bytes(os.urandom(PIPELINE_FROM + KiB if name == "big_rot" else 64 * KiB))
    targets = [target(path, i) for i, path in enumerate(files.values(), start=1)]
    flip_keeping_mtime(files["rot"], 1000)
    flip_keeping_mtime(files["big_rot"], PIPELINE_FROM - 7)  # checked in a lane, chunk after chunk
    with open(files["grown"], "ab") as fh:
        fh.write(b"more")
    os.utime(files["touched"], ns=(0, 1_000_000_000))
    files["deleted"].unlink()

    scrubber, results = sweep(targets)
    kinds = {os.path.basename(r.target.path): r.kind for r in results}
    assert kinds == {
        b"ok": "ok",
        b"rot": "hash_mismatch",
        b"big_rot": "hash_mismatch",
        b"grown": "changed",
        b"touched": "changed",
        b"deleted": "missing",
    }
    rot = next(r for r in results if r.kind == "hash_mismatch")
    assert rot.blake3_now == blake3.blake3(files["rot"].read_bytes()).hexdigest()
    assert "size and mtime unchanged" in rot.detail
    changed = {r.target.path: r for r in results if r.kind == "changed"}
    assert {r.bytes_read for r in changed.values()} == {0}  # a changed file is not read at all
    assert all(r.checked_at == r.last_verified for r in results)
    assert scrubber.progress.stopped == "done"
    assert scrubber.progress.counts == {"ok": 1, "hash_mismatch": 2, "changed": 2, "missing": 1}
    assert scrubber.progress.bytes == 2 * 64 * KiB + PIPELINE_FROM + KiB


def test_replaced_file_with_same_size_and_mtime_is_changed_not_rot(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100)
    row = target(path, 1)
    st = os.stat(path)
    (tmp_path / "g").write_bytes(b"b" * 100)
    os.utime(tmp_path / "g", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp_path / "g", path)
    _, (result,) = sweep([row])
    assert (result.kind, result.detail) == ("changed", "replaced by another file (inode changed)")


def test_unreadable_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)

    def failing(
        path: bytes, settled: SettledFile, buffer: bytearray | memoryview, stop: threading.Event | None = None
    ) -> HashOutcome:
        return FileFailure(
            settled.ref, settled.stat, "read failed: input/output error (failing disk or network mount?)"
        )

    scrubber = Scrubber(ScrubPlan(Budget(), 5000.0), clock=Ticks(), now=Ticks(5000.0), hasher=failing)
    (result,) = scrubber.sweep([target(path, 1)])
    assert (result.kind, result.detail) == (
        "unreadable",
        "read failed: input/output error (failing disk or network mount?)",
    )


@pytest.mark.skipif(os.getuid() == 0, reason="root reads everything")
def test_unreadable_without_permission(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    row = target(path, 1)
    path.chmod(0)
    _, (result,) = sweep([row])
    assert result.kind == "unreadable"


def test_byte_budget_stops_half_way_and_the_next_sweep_finishes(tmp_path: Path) -> None:
    rows: dict[int, ScrubTarget] = {}
    for i in range(1, 5):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(64 * KiB))
        rows[i] = target(path, i, last_verified=None if i < 3 else 100.0 + i)

    def run(started: float) -> tuple[Scrubber, list[ScrubResult]]:
        plan = ScrubPlan(Budget(max_bytes=128 * KiB), started)
        scrubber = Scrubber(plan, clock=Ticks(), now=Ticks(started))
        results = list(scrubber.sweep(plan.order(rows.values())))
        for r in results:  # what the service persists
            rows[r.target.row_id] = dataclasses.replace(rows[r.target.row_id], last_verified=r.last_verified)
        return scrubber, results

    first, results = run(5000.0)
    assert [r.target.row_id for r in results] == [1, 2]  # never verified first
    assert first.progress.stopped == "budget"
    assert first.progress.stopped_before is not None and first.progress.stopped_before.row_id == 3
    second, results = run(6000.0)
    assert [r.target.row_id for r in results] == [3, 4]  # continues where the first one ended
    assert second.progress.stopped == "budget"
    assert all(r.last_verified is not None and r.last_verified >= 5000.0 for r in rows.values())
    _, results = run(7000.0)
    assert [r.target.row_id for r in results] == [1, 2]  # and around again, oldest first


def test_time_budget_uses_the_injected_clock(tmp_path: Path) -> None:
    rows = []
    for i in range(1, 6):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
        rows.append(target(tmp_path / f"f{i}", i))
    parsed = parse_budget("30m")
    assert isinstance(parsed, Budget)
    plan = ScrubPlan(parsed, 5000.0)
    clock = Ticks(step=400.0)  # every clock read is 400 s later
    scrubber = Scrubber(plan, clock=clock, now=Ticks(5000.0))
    results = list(scrubber.sweep(rows))
    assert 1 <= len(results) < 5
    assert scrubber.progress.stopped == "budget"
    assert scrubber.progress.elapsed >= 1800.0


def test_a_file_bigger_than_the_budget_is_still_verified(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 10 * KiB)
    (tmp_path / "next").write_bytes(b"y")
    _, results = sweep([target(tmp_path / "big", 1), target(tmp_path / "next", 2)], Budget(max_bytes=KiB))
    assert [r.kind for r in results] == ["ok"]


def test_nothing_is_checked_twice_in_a_sweep(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "g").write_bytes(b"y")
    row = target(tmp_path / "f", 1)
    fresh = target(tmp_path / "g", 2, last_verified=5001.0)  # verified after this sweep began
    unhashed = dataclasses.replace(target(tmp_path / "g", 3), blake3=None)
    _, results = sweep([row, row, fresh, unhashed, row], now=5000.0)
    assert [r.target.row_id for r in results] == [1]


def test_order_puts_never_verified_first_then_oldest() -> None:
    plan = ScrubPlan(Budget(), started=100.0)
    base = ScrubTarget(0, 1, "m", b"x", b"/x", 1, 1, 1, 1, "h", None)
    rows = [
        dataclasses.replace(base, row_id=1, last_verified=50.0),
        dataclasses.replace(base, row_id=2, last_verified=None),
        dataclasses.replace(base, row_id=3, last_verified=10.0),
        dataclasses.replace(base, row_id=4, last_verified=150.0),
        dataclasses.replace(base, row_id=5, last_verified=None),
    ]
    assert [t.row_id for t in plan.order(rows)] == [2, 5, 3, 1]


def test_stop_event_ends_the_sweep(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    stop = threading.Event()
    stop.set()
    scrubber = Scrubber(ScrubPlan(Budget(), 5000.0), clock=Ticks(), now=Ticks(), stop=stop)
    assert list(scrubber.sweep([target(tmp_path / "f", 1)])) == []
    assert scrubber.progress.stopped == "stopped"


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("90s", Budget(max_seconds=90)),
        ("30m", Budget(max_seconds=1800)),
        ("2h", Budget(max_seconds=7200)),
        ("1h30m", Budget(max_seconds=5400)),
        ("1.5h", Budget(max_seconds=5400)),
        ("1d", Budget(max_seconds=86400)),
        (" 45 min ", Budget(max_seconds=2700)),
        ("500GiB", Budget(max_bytes=500 << 30)),
        ("10G", Budget(max_bytes=10 << 30)),
        ("10g", Budget(max_bytes=10 << 30)),
        ("1TB", Budget(max_bytes=10**12)),
        ("30M", Budget(max_bytes=30 << 20)),
        ("30MB", Budget(max_bytes=30 * 10**6)),
        ("512KiB", Budget(max_bytes=512 << 10)),
        ("100B", Budget(max_bytes=100)),
    ],
)
def test_parse_budget(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("500", "needs a unit"),
        ("10 parsecs", "unknown unit 'parsecs'"),
        ("0m", "more than zero"),
        ("0GiB", "more than zero"),
        ("1G30m", "sizes cannot be combined"),
        ("-5m", "cannot read"),
        ("abc", "cannot read"),
        ("5m!", "cannot read"),
    ],
)
def test_parse_budget_errors(text: str, reason: str) -> None:
    error = parse_budget(text)
    assert isinstance(error, BudgetError)
    assert reason in error.reason
    assert str(error).startswith(f"invalid budget {text!r}")


def test_lower_thread_priority_touches_only_the_calling_thread() -> None:
    seen: dict[str, object] = {}

    def sweep_thread() -> None:
        seen["problems"] = lower_thread_priority()
        tid = threading.get_native_id()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["io"] = thread_io_class(tid)

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=sweep_thread)
    worker.start()
    worker.join()
    assert seen["problems"] == []
    assert seen["nice"] == sweep_nice() == min(19, before + LOWER_BY)
    assert seen["io"] in (IOPRIO_CLASS_IDLE, None)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    assert thread_io_class() != IOPRIO_CLASS_IDLE


def test_run_lowered_leaves_the_calling_thread_alone() -> None:
    """anyio reuses its worker threads and a nice value cannot be raised back without privilege:
    the sweep runs on a thread of its own, and threads it starts (the hasher's) inherit."""
    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)

    def work() -> tuple[int, int, int | None, int | None]:
        tid = threading.get_native_id()
        child: list[tuple[int, int | None]] = []

        def started_by_the_sweep() -> None:
            own = threading.get_native_id()
            child.append((os.getpriority(os.PRIO_PROCESS, own), thread_io_class(own)))

        helper = threading.Thread(target=started_by_the_sweep)
        helper.start()
        helper.join()
        return tid, os.getpriority(os.PRIO_PROCESS, tid), thread_io_class(tid), child[0][1]

    problems: list[list[str]] = []
    tid, nice, io, child_io = run_lowered(work, on_problems=problems.append)
    assert tid != me and problems == []
    assert nice == sweep_nice() and io in (IOPRIO_CLASS_IDLE, None) and child_io == io
    assert os.getpriority(os.PRIO_PROCESS, me) == before
    assert thread_io_class() != IOPRIO_CLASS_IDLE

    def fails() -> None:
        raise ValueError("disk on fire")

    with pytest.raises(ValueError, match="disk on fire"):
        run_lowered(fails)


def test_lowering_again_changes_nothing_and_never_raises_the_priority() -> None:
    seen: list[int] = []

    def lowered() -> None:
        tid = threading.get_native_id()
        assert lower_thread_priority() == []
        assert lower_thread_priority() == []  # relative to the daemon, not to this thread
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        assert lower_thread_priority(LOWER_BY + 5) == []
        assert lower_thread_priority() == []  # back up would be a raise: refused quietly, not tried
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    worker = threading.Thread(target=lowered)
    worker.start()
    worker.join()
    assert seen == [sweep_nice(), sweep_nice(LOWER_BY + 5)]


def test_time_adds_up_over_pages_of_rows(tmp_path: Path) -> None:
    """The service feeds a sweep page by page: the budget covers them all, not each one."""
    rows = []
    for i in range(1, 7):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
        rows.append(target(tmp_path / f"f{i}", i))
    clock = Ticks(step=100.0)
    scrubber = Scrubber(ScrubPlan(Budget(max_seconds=1000.0), 5000.0), clock=clock, now=Ticks(5000.0))
    first = list(scrubber.sweep(rows[:3]))
    after_first = (scrubber.progress.stopped, scrubber.progress.elapsed)
    clock.t += 10_000.0  # time between pages (catalog writes) is not the sweep's
    second = list(scrubber.sweep(rows[3:]))
    assert len(first) == 3 and after_first[0] == "done"
    assert scrubber.progress.elapsed > after_first[1]
    assert scrubber.progress.stopped == "budget" and len(second) < 3


class SlowHasher:
    """Stands in for the real hasher: takes `delay[name]` seconds and notes how many ran at once
    and at which nice value."""

    def __init__(self, delay: dict[bytes, float]) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.nice: set[int] = set()
        self.release = threading.Event()

    def __call__(
        self,
        path: bytes,
        settled: SettledFile,
        buffer: bytearray | memoryview,
        stop: threading.Event | None = None,
    ) -> HashOutcome:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        try:
            waited = 0.0
            while waited < self.delay.get(os.path.basename(path), 0.0):
                if stop is not None and stop.is_set():
                    return Unsettled(settled.ref)
                time.sleep(0.005)
                waited += 0.005
            with open(path, "rb") as fh:
                return HashedFile(settled.ref, settled.stat, blake3.blake3(fh.read()).hexdigest())
        finally:
            with self.lock:
                self.running -= 1


def big_targets(tmp_path: Path, names: Iterable[str], size: int = LANE_FROM) -> list[ScrubTarget]:
    out = []
    for i, name in enumerate(names, start=1):
        (tmp_path / name).write_bytes(os.urandom(size))
        out.append(target(tmp_path / name, i))
    return out


def test_lanes_check_big_files_side_by_side_and_report_in_order(tmp_path: Path) -> None:
    rows = big_targets(tmp_path, ["a", "b", "c", "d"])
    (tmp_path / "small").write_bytes(b"s" * 100)
    rows.insert(2, target(tmp_path / "small", 9))  # checked in the sweep's own thread meanwhile
    slow = SlowHasher({b"a": 0.2, b"b": 0.02, b"c": 0.02, b"d": 0.02})  # the first one finishes last
    scrubber = Scrubber(ScrubPlan(Budget(), 5000.0), clock=Ticks(), now=Ticks(5000.0), hasher=slow, lanes=2)
    results = list(scrubber.sweep(rows))
    assert [r.target.row_id for r in results] == [1, 2, 9, 3, 4]
    assert [r.kind for r in results] == ["ok"] * 5
    assert slow.most >= 2  # two lanes, and the small file maybe beside them
    assert scrubber.progress.files == 5 and scrubber.progress.stopped == "done"


def test_lanes_keep_the_byte_budget(tmp_path: Path) -> None:
    """Bytes still being read count against the budget: with two lanes, a budget of two files
    checks two files, as one lane would."""
    rows = big_targets(tmp_path, ["a", "b", "c", "d"])
    plan = ScrubPlan(Budget(max_bytes=2 * LANE_FROM), 5000.0)
    scrubber = Scrubber(plan, clock=Ticks(), now=Ticks(5000.0), hasher=SlowHasher({}), lanes=2)
    results = list(scrubber.sweep(rows))
    assert [r.target.row_id for r in results] == [1, 2]
    assert scrubber.progress.stopped == "budget"
    assert scrubber.progress.stopped_before is not None and scrubber.progress.stopped_before.row_id == 3


def test_stop_during_lanes_reports_what_finished_before_it(tmp_path: Path) -> None:
    rows = big_targets(tmp_path, ["a", "b", "c"])
    slow = SlowHasher({b"a": 0.01, b"b": 5.0, b"c": 5.0})
    stop = threading.Event()
    scrubber = Scrubber(
        ScrubPlan(Budget(), 5000.0), clock=Ticks(), now=Ticks(5000.0), hasher=slow, lanes=2, stop=stop
    )
    out = scrubber.sweep(rows)
    first = next(out)
    assert first.target.row_id == 1
    stop.set()
    assert list(out) == []  # b was interrupted; c, started after it, is not reported either
    assert scrubber.progress.stopped == "stopped"
    assert scrubber.progress.stopped_before is not None and scrubber.progress.stopped_before.row_id == 2
    assert scrubber.progress.files == 1
    # The next sweep over the same rows picks up the interrupted ones.
    stop.clear()
    slow.delay.clear()
    again = list(scrubber.sweep(rows))
    assert [r.target.row_id for r in again] == [2, 3]


@pytest.mark.skipif(LANES < 2, reason="one CPU: no lanes")
def test_lanes_run_at_the_priority_of_the_sweep(tmp_path: Path) -> None:
    rows = big_targets(tmp_path, ["a", "b", "c"])
    slow = SlowHasher({b"a": 0.02, b"b": 0.02, b"c": 0.02})
    scrubber = Scrubber(ScrubPlan(Budget(), 5000.0), hasher=slow, lanes=2)
    results = run_lowered(lambda: list(scrubber.sweep(rows)))
    assert len(results) == 3 and slow.most == 2
    assert slow.nice == {sweep_nice()}


def test_lanes_hash_for_real(tmp_path: Path) -> None:
    """The default hasher in lanes: big files read chunk by chunk in each lane's own buffer."""
    rows = big_targets(tmp_path, ["a", "b", "c"], size=2 * LANE_CHUNK + 5)
    flip_keeping_mtime(tmp_path / "b", LANE_CHUNK + 1)  # in the second read
    scrubber = Scrubber(ScrubPlan(Budget(), 5000.0), clock=Ticks(), now=Ticks(5000.0), lanes=2)
    assert [r.kind for r in scrubber.sweep(rows)] == ["ok", "hash_mismatch", "ok"]
