"""The service's lifecycle in this process: its sockets, reload (what SIGHUP runs), a second
service refused, where logs go, the catalog URL as shown, and the live events a real ZeroMQ SUB
socket receives."""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
import stat
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import zmq

from importctl.client import Client
from importctl.protocol import (
    PROTOCOL_VERSION,
    TERMINAL_STATES,
    Event,
    FilesEvent,
    GapsEvent,
    ScanReply,
    Topic,
    endpoint_for,
    events_path_for,
)
from importd.api.server import AlreadyRunning
from importd.service import Service, _redact, log_dir
from tests.unit.importd.api.test_table import problems, wait_until
from tests.unit.importd.inprocess import config_for, run_service

EXPECT = """
[expect.character]
attributes = ["age"]
roles = ["source_image"]
scenes = ["intro", "dance"]
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    overrides = ("IMPORTD_CATALOG_URL", "IMPORTD_SOCKET", "IMPORTD_STATE_DIR")
    for name in (*overrides, "NOTIFY_SOCKET", "LOGS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    yield
    # A service built here and never run leaves its streams and sockets to the collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def started_up(service: Service) -> bool:
    scans = service.pipeline.scans.by_id.values()
    return len(service.pipeline.roots.by_id) == len(service.config.roots) and all(
        s.state in TERMINAL_STATES for s in scans
    )


def live_paths(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {row[0] for row in conn.execute("SELECT display_path FROM files WHERE status = 'present'")}
    finally:
        conn.close()


def test_it_binds_both_sockets_and_removes_them_on_stop(tmp_path: Path) -> None:
    config = config_for(tmp_path, {})
    events = events_path_for(config.socket_path)

    def body(service: Service) -> None:
        for path in (config.socket_path, events):
            assert path.is_socket() and stat.S_IMODE(path.stat().st_mode) == 0o660
        assert service.events.path == events
        assert Client(config.socket_path).status()["version"] == service.version

    run_service(config, body, started_up)
    assert not config.socket_path.exists() and not events.exists()


def test_a_second_service_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    config = config_for(tmp_path, {})

    def body(service: Service) -> str:
        second = Service(config)
        try:
            with pytest.raises(AlreadyRunning) as refused:
                anyio.run(second.run)
        finally:
            second.control.ctx.term()
            anyio.run(second.engine.dispose)
        # The first one still owns and serves its socket.
        assert config.socket_path.is_socket()
        assert Client(config.socket_path).status()["pid"] == os.getpid()
        return str(refused.value)

    message = run_service(config, body, started_up)
    assert f"pid {os.getpid()}" in message and str(config.socket_path) in message


def test_reload_adds_and_removes_roots_and_keeps_the_running_config_when_the_file_is_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
        (root / f"in-{root.name}.txt").write_bytes(root.name.encode())
    base = tmp_path / "service"
    config = config_for(base, {"first": first})
    db = base / "state" / "catalog.db"

    def body(service: Service) -> None:
        assert service.core.roots()[0].name == "first"
        assert wait_until(lambda: live_paths(db) == {"in-first.txt"})

        config_for(base, {"second": second})  # rewrites the file the service was started from
        anyio.from_thread.run(service.reload)
        assert [r.name for r in service.core.roots()] == ["second"]
        assert [r.name for r in service.config.roots] == ["second"]
        # The added root is reconciled; the removed one's files stay as they were.
        assert wait_until(lambda: live_paths(db) == {"in-first.txt", "in-second.txt"})

        running = service.config
        assert config.source is not None
        config.source.write_text("settle_seconds = = 1\n[[roots]\n", encoding="utf-8")
        with caplog.at_level(logging.ERROR, logger="importd"):
            anyio.from_thread.run(service.reload)
        assert service.config is running and [r.name for r in service.core.roots()] == ["second"]
        assert any("reload failed, keeping the running configuration" in r.message for r in caplog.records)
        assert Client(config.socket_path).status()["pid"] == os.getpid()  # still serving

        # What only a restart can change is kept, with a warning.
        moved = base / "elsewhere.sock"
        config_for(base, {"second": second})
        source = config.source.read_text(encoding="utf-8")
        assert str(config.socket_path) in source
        config.source.write_text(source.replace(str(config.socket_path), str(moved)), encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="importd"):
            anyio.from_thread.run(service.reload)
        assert service.config.socket_path == config.socket_path and not moved.exists()
        assert any("control.socket changed" in r.message for r in caplog.records)

    run_service(config, body, started_up)


def test_log_dir_honours_logs_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert log_dir(tmp_path / "state") == tmp_path / "state" / "logs"
    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/importd")
    assert log_dir(tmp_path / "state") == Path("/var/log/importd")
    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/importd:/var/log/other")  # systemd lists several
    assert log_dir(tmp_path / "state") == Path("/var/log/importd")


def test_the_catalog_url_is_shown_without_its_password() -> None:
    assert _redact("postgresql://importd:s3cret@db.example:5432/catalog") == (
        "postgresql://***@db.example:5432/catalog"
    )
    assert _redact("postgresql://importd:p%40ss@db/catalog") == "postgresql://***@db/catalog"
    assert "s3cret" not in _redact("postgresql+asyncpg://u:s3cret@h/c?sslmode=require")
    assert _redact("sqlite:////var/lib/importd/catalog.db") == "sqlite:////var/lib/importd/catalog.db"


def character(root: Path, name: str) -> None:
    """A character with one of its two scenes, its age and its source image."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "intro.mp4").write_bytes(os.urandom(2000))
    (folder / "source.jpg").write_bytes(os.urandom(1000))
    (folder / "metadata.json").write_text(json.dumps({"age": 30}), encoding="utf-8")


def test_run_files_and_gaps_events_reach_a_subscriber(tmp_path: Path) -> None:
    studio = tmp_path / "studio"
    studio.mkdir()
    roots = f'\n[[roots]]\nname = "studio"\npath = "{studio}"\nrules = "characters"\n'
    config = config_for(tmp_path / "service", {}, extra=textwrap.dedent(EXPECT) + roots)

    def body(service: Service) -> list[Event]:
        places = service.core.resolve("studio")
        assert isinstance(places, list)
        (place,) = places
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint_for(events_path_for(config.socket_path)))
        received: list[Event] = []

        def receive(timeout_s: float) -> Event | None:
            if not sub.poll(int(timeout_s * 1000), zmq.POLLIN):
                return None
            topic, body = sub.recv_multipart()
            event: Event = json.loads(body)
            assert topic.decode() == event["topic"]
            received.append(event)
            return event

        try:
            # A SUB socket gets only what is published once its subscription has arrived: ask
            # for scans until their events come through.
            for _ in range(100):
                anyio.from_thread.run(service.core.request_scans, [place])
                if receive(0.1) is not None:
                    break
            assert received, "no event came through"
            character(studio, "Alice")
            (scan,) = anyio.from_thread.run(service.core.request_scans, [place])
            scan_id = scan["scan_id"]
            for _ in range(600):
                event = receive(0.1)
                if (
                    event is not None
                    and event["topic"] == Topic.RUN
                    and event["data"].get("scan_id") == scan_id
                    and event["data"].get("state") in TERMINAL_STATES
                ):
                    break
            else:
                raise AssertionError("the scan's last run event never came")
            while receive(0.2) is not None:  # what the mapper announces after the scan ended
                pass
        finally:
            sub.close()
            ctx.term()
        return received

    events = run_service(config, body, started_up)

    for event in events:
        assert problems(event, Event) == [], event
        assert event["v"] == PROTOCOL_VERSION
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    by_topic: dict[str, list[Any]] = {}
    for event in events:
        by_topic.setdefault(event["topic"], []).append(event["data"])

    runs = by_topic[Topic.RUN]
    assert all(problems(data, ScanReply) == [] for data in runs)
    assert {"scanning", "importing", "completed"} <= {data["state"] for data in runs}
    assert all(data["root"] == "studio" for data in runs)

    files = by_topic[Topic.FILES]
    assert all(problems(data, FilesEvent) == [] for data in files)
    assert sum(data["counts"].get("new", 0) for data in files) == 3
    sample = {s["relpath"] for data in files for s in data["sample"]}
    assert sample == {"Alice/intro.mp4", "Alice/source.jpg", "Alice/metadata.json"}

    gaps = by_topic[Topic.GAPS]
    assert all(problems(data, GapsEvent) == [] for data in gaps)
    alice = [entity for data in gaps for entity in data["changed"] if entity["name"] == "Alice"]
    assert alice and {"kind": "scene", "name": "dance"} in alice[-1]["missing"]
