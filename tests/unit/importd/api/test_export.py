"""`export`, `backup` and `stream_next` over the socket, against the service in this process: the
replies in their declared shapes, a stream pulled to its end, cancelled, or left idle and closed."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import pytest

from importctl.client import Client
from importctl.protocol import ErrorCode, Method
from importd.api import export as export_api
from importd.service import Service
from tests.unit.importd.api.test_table import conforms, daemon_error
from tests.unit.importd.inprocess import config_for, run_service, started_up


def test_streams_over_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for i in range(30):
        (root / f"f{i}.txt").write_bytes(b"x" * i)
    monkeypatch.setattr(export_api, "CHUNK_CHARS", 2000)  # several pieces from a small catalog
    monkeypatch.setattr(export_api, "CHUNK_BYTES", 3 << 12)
    monkeypatch.setattr(export_api, "STREAM_IDLE_S", 0.3)
    config = config_for(tmp_path / "daemon", {"media": root})

    def body(service: Service) -> None:
        client = Client(config.socket_path, timeout=10)
        started = client.export()
        conforms(Method.EXPORT, started)
        assert started["kind"] == "export" and started["format"] == "jsonl"
        pieces = list(client.pull(started["stream"]))
        for piece in pieces:
            conforms(Method.STREAM_NEXT, piece)
        assert len(pieces) > 2 and pieces[-1]["done"] and not any(p["done"] for p in pieces[:-1])
        lines = "".join(p["data"] for p in pieces).splitlines()
        assert json.loads(lines[-1])["rows"]["files"] == 30
        assert pieces[-1]["summary"] == {"lines": len(lines)}
        ended = daemon_error(lambda: client.stream_next(started["stream"]))
        assert ended.code is ErrorCode.NOT_FOUND, "an ended stream is gone"
        assert daemon_error(lambda: client.export("csv")).code is ErrorCode.INVALID

        # Cancelled, and left idle: both closed (and their read transactions with them).
        cancelled = client.export()["stream"]
        client.stream_next(cancelled)
        assert client.stream_next(cancelled, cancel=True)["done"]
        idle = client.export()["stream"]
        client.stream_next(idle)
        time.sleep(export_api.STREAM_IDLE_S + 1.5)
        assert daemon_error(lambda: client.stream_next(idle)).code is ErrorCode.NOT_FOUND
        assert export_api._streams(service.core).open == {}

        # At most MAX_STREAMS at once.
        opened = [client.export()["stream"] for _ in range(export_api.MAX_STREAMS)]
        assert daemon_error(lambda: client.export()).code is ErrorCode.BUSY
        for token in opened:
            client.stream_next(token, cancel=True)

        # The backup: progress, then the file's bytes; a valid catalog with every file in it.
        backup = client.backup()
        conforms(Method.BACKUP, backup)
        assert backup["kind"] == "backup" and backup["format"] == "sqlite"
        pieces = list(client.pull(backup["stream"]))
        for piece in pieces:
            conforms(Method.STREAM_NEXT, piece)
        data = b"".join(base64.b64decode(p["data"]) for p in pieces)
        summary = pieces[-1]["summary"]
        assert summary["bytes"] == len(data) == summary["pages"] * summary["page_size"]
        copy = tmp_path / "copy.db"
        copy.write_bytes(data)
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM files").fetchone() == (30,)
        conn.close()
        assert not list(config.state_dir.glob(".backup-*")), "the staged copy is removed"

    run_service(config, body, started_up)
