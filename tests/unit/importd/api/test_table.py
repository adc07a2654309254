"""The API table over a real socket: the server loop with the real table, the real importctl
client over `ipc://` in tmp_path. Against a scripted core, the protocol's refusals (the server
keeps serving); against the service running in this process over a real SQLite catalog, every
method, each reply checked against its TypedDict in protocol.py (keys, types, ISO Z times)."""

from __future__ import annotations

import os
import re
import sqlite3
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints, is_typeddict

import anyio
import pytest
import zmq

from importctl.client import Client, DaemonError
from importctl.protocol import (
    MAX_REQUEST_BYTES,
    METHOD_PARAMS,
    PROTOCOL_VERSION,
    REPLY_SHAPES,
    TERMINAL_STATES,
    ErrorCode,
    Event,
    Method,
    Reply,
    Request,
    ScanReply,
)
from importd.api.server import ControlSocket, serve
from importd.api.table import TABLE
from importd.service import Service
from tests.unit.importd.inprocess import config_for, run_service, started_up

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# Keys that hold a time, in every reply shape and event.
STAMPS = {
    "started",
    "finished",
    "at",
    "first_seen",
    "last_seen",
    "missing_since",
    "since",
    "created",
    "resolved",
    "when",
    "restored_at",
    "oldest_verified",
}
T = TypeVar("T")


def problems(value: Any, shape: Any, where: str = "result") -> list[str]:
    """Where `value` (decoded JSON) departs from the type `shape`: a missing or unknown key, a
    wrong type, a time not in ISO 8601 UTC with Z. Empty when it conforms."""
    if shape is Any or shape is object:
        return []
    if is_typeddict(shape):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        hints = get_type_hints(shape)
        out = [f"{where}: missing {k!r}" for k in sorted(shape.__required_keys__ - value.keys())]
        out += [f"{where}: unknown key {k!r}" for k in sorted(value.keys() - hints.keys())]
        for key, item in value.items():
            if key in hints:
                out += problems(item, hints[key], f"{where}.{key}")
                if key in STAMPS and isinstance(item, str) and not ISO_Z.fullmatch(item):
                    out.append(f"{where}.{key}: {item!r} is not ISO 8601 UTC with Z")
        return out
    origin = get_origin(shape)
    if origin in (Union, types.UnionType):
        found = [problems(value, option, where) for option in get_args(shape)]
        return [] if any(not p for p in found) else min(found, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        (item_shape,) = get_args(shape)
        return [p for i, item in enumerate(value) for p in problems(item, item_shape, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        _, item_shape = get_args(shape)
        return [p for k, item in value.items() for p in problems(item, item_shape, f"{where}.{k}")]
    if shape is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    if shape is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, shape)
    return [] if ok else [f"{where}: {value!r} is not {shape.__name__}"]


def conforms(method: str, result: Any) -> None:
    shape, is_list = REPLY_SHAPES[method]
    found = problems(result, list[shape] if is_list else shape)
    assert found == [], f"{method}: {found}"


def wait_until(predicate: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {predicate}")


def daemon_error(call: Callable[[], object]) -> DaemonError:
    with pytest.raises(DaemonError) as err:
        call()
    return err.value


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMPORTD_CATALOG_URL", "IMPORTD_SOCKET", "IMPORTD_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_every_method_has_a_handler_a_parameter_schema_and_a_reply_shape() -> None:
    methods = {m.value for m in Method}
    assert set(TABLE) == methods
    assert set(METHOD_PARAMS) == methods
    assert set(REPLY_SHAPES) == methods
    assert all(callable(handler) for handler in TABLE.values())


def test_the_shape_check_catches_what_it_should() -> None:
    scan: dict[str, Any] = {
        "scan_id": 1,
        "run_id": None,
        "root": "r",
        "path": "",
        "trigger": "manual",
        "state": "queued",
        "files_seen": 0,
        "changed": 0,
        "pending": 0,
        "vanished": 0,
        "errors": 0,
        "entities_created": 0,
        "entities_updated": 0,
        "files_registered": 0,
        "duplicates": 0,
        "started": "2026-11-21T08:00:00.412Z",
        "finished": None,
        "message": "",
    }
    assert problems(scan, ScanReply) == []
    assert problems(scan | {"started": 1790000000.5}, ScanReply) != []
    assert problems(scan | {"started": "2026-11-21T08:00:00.412+00:00"}, ScanReply) != []
    assert problems(scan | {"extra": 1}, ScanReply) == ["result: unknown key 'extra'"]
    assert problems({k: v for k, v in scan.items() if k != "root"}, ScanReply) == ["result: missing 'root'"]
    assert problems(scan | {"files_seen": True}, ScanReply) != []


# ----- the server loop, with a scripted core ---------------------------------------------------


class ScriptedCore:
    """Answers `scan_progress` from a dict; any other use of the core is a test failure."""

    def __init__(self, scans: dict[int, ScanReply]) -> None:
        self.scans = scans

    def scan(self, scan_id: int) -> ScanReply | None:
        if scan_id == 666:
            raise RuntimeError("the core broke")
        return self.scans.get(scan_id)


@pytest.fixture
def scripted_server(tmp_path: Path) -> Iterator[Callable[[Callable[[Client], None]], None]]:
    def run(body: Callable[[Client], None]) -> None:
        scan: ScanReply = {
            "scan_id": 1,
            "run_id": 5,
            "root": "films",
            "path": "",
            "trigger": "manual",
            "state": "completed",
            "files_seen": 3,
            "changed": 1,
            "pending": 0,
            "vanished": 0,
            "errors": 0,
            "entities_created": 0,
            "entities_updated": 0,
            "files_registered": 1,
            "duplicates": 0,
            "started": "2026-11-21T08:00:00.000Z",
            "finished": "2026-11-21T08:00:00.412Z",
            "message": "",
        }
        control = ControlSocket(tmp_path / "run" / "control.sock")

        async def main() -> None:
            sock = control.bind()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(serve, sock, TABLE, ScriptedCore({1: scan}), "9.9.9")
                    try:
                        await anyio.to_thread.run_sync(body, Client(control.path, timeout=5))
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                control.close()

        anyio.run(main)

    yield run


def test_refusals_are_invalid_and_the_server_keeps_serving(
    scripted_server: Callable[[Callable[[Client], None]], None],
) -> None:
    def body(client: Client) -> None:
        def refused(frame: bytes, request_id: str | None = None) -> Reply:
            reply = client.send_frame(frame, request_id)
            assert not reply.ok and reply.daemon_version == "9.9.9"
            return reply

        for frame in (b"not json", b"[]", b'{"v": 2, "id": "a", "method": "status"}'):
            assert refused(frame).error_code is ErrorCode.INVALID
        unknown = refused(Request("nope").encode())
        assert unknown.error_code is ErrorCode.INVALID and "unknown method 'nope'" in unknown.error_message
        for params in ({}, {"scan_id": "1"}, {"scan_id": True}, {"scan_id": 1, "extra": 2}):
            request = Request(Method.SCAN_PROGRESS, params)
            reply = refused(request.encode(), request.id)
            assert reply.error_code is ErrorCode.INVALID and reply.id == request.id
        # Over the limit: the client does not send it; a raw sender is cut off unanswered by
        # libzmq (ZMQ_MAXMSGSIZE) before the frame is buffered.
        oversized = Request(Method.FIND, {"query": "x" * MAX_REQUEST_BYTES})
        too_big = daemon_error(lambda: client.send_frame(oversized.encode()))
        assert too_big.code is ErrorCode.INVALID and "not sent" in too_big.message
        assert "xxxx" not in too_big.message
        raw = zmq.Context.instance().socket(zmq.DEALER)
        raw.connect(f"ipc://{client.socket_path}")
        raw.send(oversized.encode())
        assert not raw.poll(500), "no reply to a frame over the limit: the connection is dropped"
        raw.close(0)
        # A handler's failure is `internal`, with the reason; the loop goes on.
        broken = daemon_error(lambda: client.scan_progress(666))
        assert broken.code is ErrorCode.INTERNAL and "the core broke" in broken.message
        missing = daemon_error(lambda: client.scan_progress(2))
        assert missing.code is ErrorCode.NOT_FOUND and "no scan 2" in missing.message
        # Still serving, and the reply is the shape the protocol declares.
        progress = client.scan_progress(1)
        conforms(Method.SCAN_PROGRESS, progress)
        assert progress["finished"] == "2026-11-21T08:00:00.412Z" and client.daemon_version == "9.9.9"

    scripted_server(body)


# ----- every method, against the service running in this process ------------------------------


def add_conflicts(db: Path) -> tuple[int, int]:
    """An entity with two open conflicts, written as the mapper would have."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            now = time.time()
            entity = conn.execute(
                "INSERT INTO entities (type, key, name, attributes, first_seen, updated)"
                " VALUES ('character', 'ada', 'Ada', '{\"age\": 30, \"city\": \"Paris\"}', ?, ?)",
                (now, now),
            ).lastrowid
            ids = [
                conn.execute(
                    "INSERT INTO conflicts (entity_id, attribute, current, proposed, source, status, created)"
                    " VALUES (?, ?, ?, ?, 'Ada/metadata.json', 'open', ?)",
                    (entity, attribute, current, proposed, now),
                ).lastrowid
                for attribute, current, proposed in (("age", "30", "31"), ("city", '"Paris"', '"Rome"'))
            ]
    finally:
        conn.close()
    assert ids[0] is not None and ids[1] is not None
    return ids[0], ids[1]


def test_every_method_over_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"same")
    (root / "b.txt").write_bytes(b"same")
    (root / "sub" / "c.txt").write_bytes(b"other")
    (root / "dangling").symlink_to("gone.txt")
    config = config_for(tmp_path / "daemon", {"media": root})
    monkeypatch.chdir(root)  # `find` and `info` send the client's directory

    def body(service: Service) -> None:
        client = Client(config.socket_path, timeout=10)

        status = wait_until(lambda: (s := client.status())["files"]["present"] == 3 and s)
        conforms(Method.STATUS, status)
        assert [r["name"] for r in status["roots"]] == ["media"] and status["last_scan"] is not None
        assert status["queue"].keys() >= {"settling", "hashing", "writing"}

        # files: find by path (absolute, relative, a folder) and by hash; errors
        (a,) = client.find(str(root / "a.txt"))
        conforms(Method.FIND, [a])
        assert (a["root"], a["relpath"], a["status"], a["size"]) == ("media", "a.txt", "present", 4)
        assert [r["relpath"] for r in client.find("sub")] == ["sub/c.txt"]
        same = client.find(str(a["blake3"])[:12])
        conforms(Method.FIND, same)
        assert sorted(r["relpath"] for r in same) == ["a.txt", "b.txt"]
        missing = daemon_error(lambda: client.find(str(root / "nothing-here")))
        assert missing.code is ErrorCode.NOT_FOUND
        assert missing.message == f"nothing in the catalog at {root / 'nothing-here'}"
        outside = daemon_error(lambda: client.find("/elsewhere"))
        assert outside.message == "/elsewhere is not under any configured root"
        conforms(Method.ERRORS, client.errors())

        # scans, their progress and their events
        with client.events(("run",)) as events:
            time.sleep(0.2)  # a subscription takes a moment to reach the publisher
            started = client.scan("media")
            conforms(Method.SCAN, started)
            (scan,) = started["scans"]
            assert scan["root"] == "media" and scan["trigger"] == "manual"
            final = wait_until(
                lambda: (p := client.scan_progress(scan["scan_id"]))["state"] in TERMINAL_STATES and p
            )
            conforms(Method.SCAN_PROGRESS, final)
            assert final["state"] == "completed" and final["files_seen"] == 3
            assert final["started"] is not None and final["finished"] is not None
            event = events.next_event(timeout=5)
        assert event is not None
        assert problems(event, Event) == [] and event["v"] == PROTOCOL_VERSION and event["topic"] == "run"
        assert problems(event["data"], ScanReply) == []
        by_path = client.scan(str(root / "sub"))
        assert by_path["scans"][0]["path"] == "sub"
        no_root = daemon_error(lambda: client.scan("films"))
        assert no_root.code is ErrorCode.NOT_FOUND and no_root.message.startswith("no root named 'films'")

        # entities: gaps, unmatched, conflicts and their settlement
        gaps = client.gaps()
        conforms(Method.GAPS, gaps)
        assert client.gaps(recompute=True) == gaps
        conforms(Method.GAPS, client.gaps(entity_type="character"))
        conforms(Method.UNMATCHED, client.unmatched())
        assert daemon_error(lambda: client.unmatched("films")).code is ErrorCode.NOT_FOUND
        keep, take = add_conflicts(config.state_dir / "catalog.db")
        open_ones = client.conflicts()
        conforms(Method.CONFLICTS, open_ones)
        assert [(c["id"], c["current"], c["proposed"]) for c in open_ones] == [
            (keep, 30, 31),
            (take, "Paris", "Rome"),
        ]
        kept = client.resolve(keep, "keep")
        conforms(Method.RESOLVE, kept)
        assert (kept["entity"], kept["attribute"], kept["value"], kept["status"]) == (
            "Ada",
            "age",
            30,
            "kept",
        )
        taken = client.resolve(take, "take_new")
        assert (taken["value"], taken["status"]) == ("Rome", "taken")
        assert client.conflicts() == []
        every = client.conflicts("all")
        conforms(Method.CONFLICTS, every)
        assert {c["status"] for c in every} == {"kept", "taken"} and all(c["resolved"] for c in every)
        assert daemon_error(lambda: client.resolve(keep, "keep")).code is ErrorCode.INVALID
        assert daemon_error(lambda: client.resolve(999, "keep")).code is ErrorCode.NOT_FOUND
        assert daemon_error(lambda: client.conflicts("maybe")).code is ErrorCode.INVALID

        # runs
        runs = client.runs()
        conforms(Method.RUNS, runs)
        assert runs and runs[0]["id"] > runs[-1]["id"]
        assert len(client.runs(limit=1)) == 1
        run = client.run(runs[-1]["id"])
        conforms(Method.RUN, run)
        assert run["trigger"] == "startup" and run["root"] == "media"
        assert daemon_error(lambda: client.run(999_999)).code is ErrorCode.NOT_FOUND
        assert daemon_error(lambda: client.cancel(999_999)).code is ErrorCode.NOT_FOUND
        cancel_ended = daemon_error(lambda: client.cancel(runs[0]["id"]))
        assert cancel_ended.code in (ErrorCode.INVALID, ErrorCode.NOT_FOUND)

        # media (extraction is off: exact duplicates only)
        dupes = client.dupes()
        conforms(Method.DUPES, dupes)
        (group,) = dupes["groups"]
        assert group["kind"] == "exact" and group["paths"] == [str(root / "a.txt"), str(root / "b.txt")]
        conforms(Method.DUPES, client.dupes("near", 12))
        assert daemon_error(lambda: client.dupes("near", 99)).code is ErrorCode.INVALID
        info = client.info("a.txt")
        conforms(Method.INFO, info)
        assert info["file"]["relpath"] == "a.txt" and info["media"] is None
        assert info["duplicates"] == [{"kind": "exact", "blake3": a["blake3"], "paths": group["paths"]}]
        assert daemon_error(lambda: client.info(str(root))).code is ErrorCode.INVALID

        # maintenance: the orphan link to the trash and back, then a sweep that finds it
        proposals = client.repair_links(None)
        conforms(Method.REPAIR_LINKS, proposals)
        (orphan,) = proposals["links"]
        assert orphan["link"] == str(root / "dangling") and orphan["action"] == "trash"
        applied = client.apply_links([{"link": orphan["link"], "action": "trash"}], "the test")
        conforms(Method.APPLY_LINKS, applied)
        (result,) = applied["results"]
        assert result["status"] == "done" and "trash_id" in result
        assert not os.path.lexists(root / "dangling")
        bad = daemon_error(lambda: client.apply_links([{"link": 1, "action": "x"}], "t"))
        assert bad.code is ErrorCode.INVALID
        trash = client.trash()
        conforms(Method.TRASH, trash)
        (item,) = trash["items"]
        assert item["restored_at"] is None and item["original"] == str(root / "dangling")
        restored = client.restore(item["id"], "the test")
        conforms(Method.RESTORE, restored)
        assert os.path.islink(root / "dangling")
        assert client.trash()["items"] == []
        (item,) = client.trash(include_restored=True)["items"]
        conforms(Method.TRASH, {"items": [item]})
        assert item["restored_at"] is not None
        again = daemon_error(lambda: client.restore(item["id"], "t"))
        assert again.code is ErrorCode.INVALID
        assert again.message == f"cannot restore {item['id']}: already restored ({item['restored_at']})"

        started_check = client.check(None, False, None)
        conforms(Method.CHECK, started_check)
        checked = wait_until(
            lambda: (r := client.check_result(started_check["run_id"]))["state"] != "running" and r
        )
        conforms(Method.CHECK_RESULT, checked)
        assert checked["state"] == "completed"
        assert [f["kind"] for f in checked.get("findings", [])] == ["broken_link"]
        assert daemon_error(lambda: client.check("films", False, None)).code is ErrorCode.NOT_FOUND
        assert daemon_error(lambda: client.check(None, False, "soon")).code is ErrorCode.INVALID
        assert daemon_error(lambda: client.check_result(999_999)).code is ErrorCode.NOT_FOUND

        # the last sweep shows in status, in the declared shape
        final_status = client.status()
        conforms(Method.STATUS, final_status)
        assert final_status["maintenance"]["last_sweep"] is not None

    run_service(config, body, started_up)
