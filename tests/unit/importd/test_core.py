"""The core the API handlers call, over the service running in this process: roots and their
states, scans and their cancellation, the status parts, targets. The handlers themselves, over
the socket, are in api/test_table.py."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import anyio.from_thread
import pytest

from importctl.protocol import TERMINAL_STATES
from importd.core import CancelOutcome, Core
from importd.pipeline.scans import Scans
from importd.service import Service
from importd.targets import Place, TargetError
from tests.unit.importd.inprocess import config_for, run_service, started_up

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMPORTD_CATALOG_URL", "IMPORTD_SOCKET", "IMPORTD_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_no_roots(tmp_path: Path) -> None:
    def body(service: Service) -> None:
        core = service.core
        assert core.roots() == [] and core.places() == [] and core.resolve(None) == []
        assert core.last_scan() is None
        assert core.stage_warnings() == []
        assert core.queue() == {"settling": 0, "hashing": 0, "writing": 0, "mapping": 0}
        assert core.counters() == dict.fromkeys(
            ("hashed_files", "hashed_bytes", "registered", "moved", "vanished", "errors"), 0
        )
        assert core.completeness() == {"percent": 100.0, "satisfied": 0, "required": 0, "orphaned": 0}
        media = core.media_status()
        assert media["enabled"] is False and set(media["faces"]) == {"state", "reason", "path"}
        assert core.media.config.enabled is False and core.media_config().near_threshold == 10
        assert core.uptime_s() >= 0 and core.pid() == os.getpid() and core.catalog.startswith("sqlite:///")
        refused = core.resolve("films")
        assert isinstance(refused, TargetError) and refused.message.startswith("no root named 'films'")

    run_service(config_for(tmp_path, {}), body, started_up)


def test_a_full_catalog_disk_is_a_warning_until_writes_go_through(tmp_path: Path) -> None:
    def body(service: Service) -> None:
        writer = service.pipeline.writer
        writer.disk_full, writer.last_error = True, "OperationalError: database or disk is full"
        assert service.core.stage_warnings() == [
            "catalog: the disk is full: writes wait until space returns",
            "catalog: writes failing, retrying: OperationalError: database or disk is full",
        ]
        writer.failing_since = 1_790_000_000.0
        assert service.core.catalog_condition() == (
            "the disk is full: writes wait until space returns (OperationalError: database or disk is full)",
            1_790_000_000.0,
        )
        writer.disk_full, writer.locked, writer.last_error = (
            False,
            True,
            "OperationalError: database is locked",
        )
        assert service.core.stage_warnings() == [
            "catalog: locked by another process: writes wait and are retried until it lets go",
            "catalog: writes failing, retrying: OperationalError: database is locked",
        ]
        condition = service.core.catalog_condition()
        assert condition is not None and condition[0].startswith("locked by another process")
        writer.locked, writer.last_error = False, None  # what a write that goes through does
        writer.failing_since = None
        assert service.core.stage_warnings() == [] and service.core.catalog_condition() is None

    run_service(config_for(tmp_path, {}), body, started_up)


def test_roots_scans_and_cancel(tmp_path: Path) -> None:
    films = tmp_path / "films"
    (films / "sub").mkdir(parents=True)
    (films / "sub" / "a.mkv").write_bytes(b"a")

    def body(service: Service) -> None:
        core: Core = service.core
        (root,) = core.roots()
        assert (root.name, root.path, root.raw_path) == ("films", str(films), os.fsencode(films))
        assert root.state in ("watching", "polling") and root.watch == "inotify" and root.walk_errors == ()
        assert root.absolute(b"sub") == os.fsencode(films / "sub") and root.absolute(b"") == root.raw_path
        last = core.last_scan()
        assert last is not None and last["state"] == "completed" and last["files_seen"] == 1
        assert ISO_Z.fullmatch(str(last["started"])) and ISO_Z.fullmatch(str(last["finished"]))
        assert core.locate("sub/a.mkv", str(films)) == Place(
            root.root_id, b"sub/a.mkv", os.fsencode(films / "sub" / "a.mkv")
        )
        assert core.resolve("films") == [Place(root.root_id, b"", root.raw_path)]

        assert last["run_id"] is not None
        assert core.cancel(last["run_id"]) == CancelOutcome(found=True, cancelled=False, state="completed")
        assert core.cancel(12345) == CancelOutcome(found=False, cancelled=False)
        assert core.scan(12345) is None

        # A scan of a root that is not (or no longer) configured ends "skipped"; one that is
        # cancelled before it ran cannot be cancelled twice.
        (scan,) = anyio.from_thread.run(core.request_scans, [Place(99, b"", b"/nowhere")])
        assert scan["root"] == "?" and scan["state"] in ("queued", "skipped")
        outcome = core.cancel(scan["scan_id"])
        assert outcome.found
        assert core.cancel(scan["scan_id"]) == CancelOutcome(found=True, cancelled=False, state=outcome.state)

    run_service(config_for(tmp_path, {"films": films}), body, started_up)


def test_a_failed_scan_is_a_warning_until_a_scan_of_that_root_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "films"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("1")
    failing = {"on": True}
    real = Scans._reconcile

    async def reconcile(self, state, scan):  # type: ignore[no-untyped-def]
        if failing["on"]:
            raise OSError(5, "Input/output error")
        await real(self, state, scan)

    def body(service: Service) -> None:
        core = service.core
        scans = service.pipeline.scans
        monkeypatch.setattr(Scans, "_reconcile", reconcile)

        def scan(target: str | None) -> None:
            places = core.resolve(target)
            assert not isinstance(places, TargetError)
            (reply,) = anyio.from_thread.run(core.request_scans, places)
            ran = scans.by_id[reply["scan_id"]]
            deadline = time.monotonic() + 20
            # `finished` is stamped, and `failed` updated, in one step as the run ends.
            while not (ran.state in TERMINAL_STATES and ran.finished) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert ran.state in TERMINAL_STATES

        scan(str(root / "a"))
        (warning,) = core.stage_warnings()
        assert warning.startswith("films/a: the last scan failed (OSError: [Errno 5] Input/output error)")
        assert "`importctl scan films` tries again; importctl run " in warning
        failing["on"] = False
        scan(str(root / "a"))
        assert core.stage_warnings() == [], "a later scan of the same folder ended well"
        failing["on"] = True
        scan("films")
        failing["on"] = False
        scan(str(root / "a"))
        assert len(core.stage_warnings()) == 1, "a folder's scan does not clear the whole root's failure"
        scan("films")
        assert core.stage_warnings() == []

    run_service(config_for(tmp_path, {"films": root}), body, started_up)


def test_a_root_folder_replaced_under_its_path_is_a_warning_for_an_hour(tmp_path: Path) -> None:
    root = tmp_path / "legacy"
    root.mkdir()

    def body(service: Service) -> None:
        state = next(iter(service.pipeline.roots.by_id.values()))
        assert service.core.stage_warnings() == []
        state.folder_changed = time.time() - 10
        (warning,) = service.core.stage_warnings()
        assert warning.startswith(f"legacy: the folder at {root} was replaced (moved or swapped) at ")
        state.folder_changed = time.time() - 3601
        assert service.core.stage_warnings() == []

    run_service(config_for(tmp_path, {"legacy": root}), body, started_up)
