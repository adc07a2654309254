"""scans: a scan's lifecycle with an injected clock and a scripted hand-on, over real files, a
real SQLite catalog and the real catalog writer (runs are recorded as they would be)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from importd.catalog import files as catalog_files
from importd.catalog import roots as catalog_roots
from importd.catalog.engine import create_engine, migrate
from importd.catalog.writer import BatchResult, CatalogWriter, FileChange
from importd.config import RootConfig
from importd.items import FileRef, FileStat, HashedFile, KnownRows
from importd.pipeline.reconcile import ReconcileDiff, WalkedFile, WalkError
from importd.pipeline.roots import Roots, RootState
from importd.pipeline.scans import Scan, Scans, walk_in_batches
from importd.pipeline.watch import Notify, PathHint

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def no_watcher(path: str) -> Notify:
    raise AssertionError("poll roots are never watched")


class Harness:
    """Scans over a real catalog; the hand-on stage is scripted: it records each batch and makes
    the scan wait for its files until the test says they are done."""

    def __init__(self, root: Path, writer: CatalogWriter, engine_url: str) -> None:
        self.clock = Clock()
        self.stopping = threading.Event()
        self.batches: list[list[WalkedFile]] = []
        self.states: list[str] = []
        self.drained = 0
        self.writer = writer
        self.roots = Roots(self._request, self._hints, 3600.0, no_watcher, self.clock)
        self.scans = Scans(
            self.roots,
            writer,
            walk=self._walk,
            known_rows=lambda root_id, prefix: catalog_files.known_rows(writer.engine, root_id, prefix),
            drain_mapping=self._drain,
            gap_report=lambda: {"completeness": {"percent": 100.0}},
            stopping=self.stopping,
            clock=self.clock,
        )
        self.scans.listeners.append(lambda scan: self.states.append(scan.state))
        self.engine_url = engine_url
        self.root = root

    async def _request(self, root_id: int, prefix: bytes, trigger: str) -> None:
        await self.scans.request(root_id, prefix, trigger)

    async def _hints(self, state: RootState, hints: list[PathHint]) -> None:
        pass

    async def _drain(self) -> None:
        self.drained += 1

    def _walk(self, state: RootState, scan: Scan, known: KnownRows) -> ReconcileDiff | None:
        def hand_on(st: RootState, sc: Scan, batch: list[WalkedFile]) -> None:
            self.batches.append(batch)
            for item in batch:
                anyio.from_thread.run_sync(self.scans.expect, sc, (st.root_id, item.relpath))

        return walk_in_batches(state, scan, known, hand_on, self.stopping)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "root"
    root.mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = create_engine(url)
    await migrate(engine)
    writer = CatalogWriter(engine)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        h = Harness(root, writer, url)
        ids = await writer.call(lambda c: catalog_roots.ensure_roots(c, "h", [("r", str(root))]))
        h.roots.add(ids["r"], RootConfig("r", root, watch="poll"), first_import=False)
        tg.start_soon(h.scans.run, tg)
        yield h
        h.scans.close()
        writer.close()
    await engine.dispose()


async def wait_state(scan: Scan, *states: str) -> None:
    with anyio.fail_after(10):
        while scan.state not in states:
            await anyio.sleep(0.01)


async def test_a_scan_hands_on_what_changed_waits_for_it_and_records_its_run(harness: Harness) -> None:
    for i in range(3):
        (harness.root / f"f{i}").write_bytes(b"x" * i)
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "importing")
    assert sorted(w.relpath for b in harness.batches for w in b) == [b"f0", b"f1", b"f2"]
    assert scan.files_seen == 3 and len(scan.pending) == 3
    assert not scan.done.is_set()  # waits for its files
    for i in range(3):
        harness.scans.file_done((1, f"f{i}".encode()))
    with anyio.fail_after(10):
        await scan.done.wait()
    await wait_state(scan, "completed")
    assert harness.drained == 1  # mapped before it completed
    assert harness.states[:4] == ["scanning", "importing", "mapping", "completed"]
    assert scan.finished is not None and scan.started is not None and scan.finished > scan.started
    assert harness.scans.last is scan
    async with harness.writer.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT kind, trigger, status, files_seen, gap_report FROM runs"))
        ).one()
        reconciled = (await conn.execute(text("SELECT last_reconciled FROM roots"))).scalar()
    assert row[:4] == ("reconcile", "manual", "completed", 3) and '"percent"' in row[4]
    assert reconciled == scan.started


async def test_cancelling_a_queued_scan_ends_it_and_it_never_walks(harness: Harness) -> None:
    blocker = await harness.scans.request(1, b"", "manual")  # runs first
    queued = await harness.scans.request(1, b"", "manual")
    assert harness.scans.cancel(queued)
    assert queued.state == "cancelled" and queued.done.is_set()
    await wait_state(blocker, "completed")
    assert queued.state == "cancelled" and queued.started is None
    assert not harness.scans.cancel(blocker)  # finished: nothing to cancel


async def test_cancelling_while_importing_says_cancelled_and_marks_nothing_reconciled(
    harness: Harness,
) -> None:
    (harness.root / "f").write_bytes(b"x")
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "importing")
    assert harness.scans.cancel(scan)
    await wait_state(scan, "cancelled")
    with anyio.fail_after(10):
        while harness.scans.last is not scan:
            await anyio.sleep(0.01)
    async with harness.writer.engine.connect() as conn:
        assert (await conn.execute(text("SELECT last_reconciled FROM roots"))).scalar() is None
        assert (await conn.execute(text("SELECT status FROM runs"))).scalar() == "cancelled"


async def test_an_offline_root_is_skipped_and_nothing_is_marked_missing(harness: Harness) -> None:
    (harness.root / "f").write_bytes(b"x")
    first = await harness.scans.request(1, b"", "manual")
    await wait_state(first, "importing")
    await harness.writer.put(
        HashedFile(FileRef(1, "r", b"f"), FileStat.of((harness.root / "f").lstat()), "ab" * 32)
    )
    harness.scans.file_done((1, b"f"))
    await wait_state(first, "completed")
    (harness.root / "f").unlink()
    harness.root.rmdir()  # unmounted
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "skipped")
    assert "offline" in scan.message
    assert harness.roots.by_id[1].state == "offline"
    async with harness.writer.engine.connect() as conn:
        assert (await conn.execute(text("SELECT status FROM files"))).scalar() == "present"


async def test_commits_count_to_the_running_scan_of_their_root(harness: Harness) -> None:
    (harness.root / "f").write_bytes(b"x")
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "importing")
    change = FileChange(1, 1, b"f", "new", "ab" * 32, True)
    harness.scans.count_committed(BatchResult(inserted=1, changes=[change]))
    assert (scan.files_registered, scan.duplicates) == (1, 1)
    assert harness.scans.counters.registered == 1
    assert harness.scans.active_run_ids() == {1: scan.run_id}
    harness.scans.file_done((1, b"f"))
    await wait_state(scan, "completed")
    assert harness.scans.active() == {}


async def registered(harness: Harness, name: str) -> None:
    (harness.root / name).write_bytes(b"x")
    first = await harness.scans.request(1, b"", "manual")
    await wait_state(first, "importing")
    await harness.writer.put(
        HashedFile(FileRef(1, "r", name.encode()), FileStat.of((harness.root / name).lstat()), "ab" * 32)
    )
    harness.scans.file_done((1, name.encode()))
    await wait_state(first, "completed")


async def test_a_bare_root_folder_is_offline_not_a_mass_deletion(harness: Harness) -> None:
    await registered(harness, "f")
    state = harness.roots.by_id[1]
    assert state.folder_had_files
    (harness.root / "f").unlink()  # what an unmounted share leaves: its empty mount point,
    state.folder_had_files = False  # seen by a daemon started since (never with files)
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "skipped")
    assert state.state == "offline" and "is empty" in (state.watch_error or "")
    assert not harness.roots.check_online(state)  # still bare: still offline
    async with harness.writer.engine.connect() as conn:
        assert (await conn.execute(text("SELECT status FROM files"))).scalar() == "present"
    (harness.root / "g").write_bytes(b"y")  # mounted again
    assert harness.roots.check_online(state)


async def test_a_folder_walk_answers_for_that_folder_s_unreadable_dirs(harness: Harness) -> None:
    state = harness.roots.by_id[1]
    (harness.root / "a").mkdir()
    state.walk_errors = [WalkError(b"a", "permission denied"), WalkError(b"b", "permission denied")]
    scan = await harness.scans.request(1, b"a", "watch")
    await wait_state(scan, "completed")
    assert state.walk_errors == [WalkError(b"b", "permission denied")]


async def test_a_root_folder_emptied_after_it_was_seen_with_files_is_believed(harness: Harness) -> None:
    await registered(harness, "f")
    (harness.root / "f").unlink()
    scan = await harness.scans.request(1, b"", "manual")
    await wait_state(scan, "completed")
    assert scan.vanished == 1 and harness.roots.by_id[1].state != "offline"
