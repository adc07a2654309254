"""The client library against a fake daemon socket: what each method sends, how replies and
errors come back, and that it never hangs when nobody answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from importctl.client import UNREACHABLE_HINT, Client, DaemonError, DaemonUnreachable, EventStream
from importctl.protocol import (
    DEFAULT_RUNS_LIMIT,
    PROTOCOL_VERSION,
    ErrorCode,
    Method,
    Reply,
    endpoint_for,
    events_path_for,
)

# A request (decoded) -> the frames to answer with (none: stay silent).
Script = Callable[[dict[str, Any]], list[bytes]]


class FakeDaemon:
    """A ROUTER socket in a thread that answers from a script and keeps every request."""

    def __init__(self, path: Path, script: Script) -> None:
        self.path = path
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        assert self._bound.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint_for(self.path))
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(20, zmq.POLLIN):
                    continue
                identity, frame = sock.recv_multipart()
                request = json.loads(frame)
                self.requests.append(request)
                for answer in self.script(request):
                    sock.send_multipart([identity, answer])
        finally:
            sock.close(linger=0)
            ctx.term()


def ok(result: Any, version: str = "0.1.0") -> Script:
    return lambda req: [Reply(req["id"], True, result=result, daemon_version=version).encode()]


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


@pytest.fixture
def daemon(socket_path: Path) -> Iterator[Callable[[Script], FakeDaemon]]:
    started: list[FakeDaemon] = []

    def start(script: Script) -> FakeDaemon:
        fake = FakeDaemon(socket_path, script).__enter__()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.__exit__()


def test_each_method_sends_its_request(socket_path: Path, daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon(ok({}))
    client = Client(socket_path, timeout=5)
    calls: list[tuple[Callable[[], object], str, dict[str, Any]]] = [
        (client.status, Method.STATUS, {}),
        (lambda: client.scan("films"), Method.SCAN, {"target": "films"}),
        (lambda: client.scan_progress(3), Method.SCAN_PROGRESS, {"scan_id": 3}),
        (lambda: client.errors(), Method.ERRORS, {"limit": 1000}),
        (
            lambda: client.gaps(),
            Method.GAPS,
            {"entity": None, "type": None, "run": None, "recompute": False, "site": False},
        ),
        (lambda: client.unmatched("films", 5), Method.UNMATCHED, {"root": "films", "limit": 5}),
        (lambda: client.conflicts(), Method.CONFLICTS, {"status": "open"}),
        (lambda: client.resolve(4, "keep"), Method.RESOLVE, {"conflict_id": 4, "action": "keep"}),
        (lambda: client.runs(), Method.RUNS, {"limit": DEFAULT_RUNS_LIMIT}),
        (lambda: client.run(8), Method.RUN, {"run_id": 8, "log_limit": 10_000}),
        (lambda: client.cancel(8), Method.CANCEL, {"run_id": 8}),
        (lambda: client.dupes("near", 4), Method.DUPES, {"kind": "near", "threshold": 4, "site": False}),
        (lambda: client.repair_links(None), Method.REPAIR_LINKS, {"target": None}),
        (
            lambda: client.apply_links([{"link": "/a", "action": "trash"}], "me"),
            Method.APPLY_LINKS,
            {"actions": [{"link": "/a", "action": "trash"}], "who": "me"},
        ),
        (lambda: client.trash(True), Method.TRASH, {"all": True}),
        (lambda: client.restore(2, "me"), Method.RESTORE, {"id": 2, "who": "me"}),
        (
            lambda: client.check("/srv", True, "2h"),
            Method.CHECK,
            {"target": "/srv", "verify_hash": True, "budget": "2h"},
        ),
        (lambda: client.check_result(9), Method.CHECK_RESULT, {"run_id": 9}),
    ]
    for call, _, _ in calls:
        assert call() == {}
    sent = [(r["v"], r["method"], r["params"]) for r in fake.requests]
    assert sent == [(PROTOCOL_VERSION, method, params) for _, method, params in calls]
    assert DEFAULT_RUNS_LIMIT == 20  # the README's figure, shared by CLI, client and daemon


def test_find_and_info_send_the_working_directory(
    socket_path: Path, daemon: Callable[[Script], FakeDaemon], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = daemon(ok([]))
    monkeypatch.chdir(tmp_path)
    client = Client(socket_path, timeout=5)
    assert client.find("a.txt") == []
    client.info("a.txt")
    client.find("a.txt", include_forgotten=True)
    client.forget("gone", undo=True)
    assert [r["params"] for r in fake.requests] == [
        {"query": "a.txt", "cwd": str(tmp_path), "all": False, "site": False},
        {"query": "a.txt", "cwd": str(tmp_path)},
        {"query": "a.txt", "cwd": str(tmp_path), "all": True, "site": False},
        {"path": "gone", "cwd": str(tmp_path), "undo": True, "dry_run": False},
    ]


def test_a_daemon_error_becomes_an_exception_with_its_code(
    socket_path: Path, daemon: Callable[[Script], FakeDaemon]
) -> None:
    daemon(
        lambda req: [
            Reply(req["id"], False, error_code=ErrorCode.NOT_FOUND, error_message="no run 9").encode()
        ]
    )
    with pytest.raises(DaemonError) as err:
        Client(socket_path, timeout=5).run(9)
    assert (err.value.code, err.value.message) == (ErrorCode.NOT_FOUND, "no run 9")


def test_replies_to_other_requests_are_skipped_and_the_version_kept(
    socket_path: Path, daemon: Callable[[Script], FakeDaemon]
) -> None:
    def stale_first(req: dict[str, Any]) -> list[bytes]:
        return [
            Reply("someone-else", True, result="stale", daemon_version="0.0.1").encode(),
            Reply(req["id"], True, result={"id": 1, "status": "cancelled"}, daemon_version="0.2.0").encode(),
        ]

    daemon(stale_first)
    client = Client(socket_path, timeout=5)
    assert client.cancel(1) == {"id": 1, "status": "cancelled"}
    assert client.daemon_version == "0.2.0"


def test_an_unreadable_reply_is_an_internal_error(
    socket_path: Path, daemon: Callable[[Script], FakeDaemon]
) -> None:
    daemon(lambda req: [b"\xff not json"])
    with pytest.raises(DaemonError) as err:
        Client(socket_path, timeout=5).status()
    assert err.value.code is ErrorCode.INTERNAL and "unreadable reply" in err.value.message


def test_no_socket_file_is_unreachable_with_a_hint(socket_path: Path) -> None:
    with pytest.raises(DaemonUnreachable) as err:
        Client(socket_path, timeout=5).status()
    assert str(err.value) == f"no control socket at {socket_path}; {UNREACHABLE_HINT}"


def test_a_socket_file_with_nobody_behind_it_times_out(socket_path: Path) -> None:
    socket_path.touch()
    began = time.monotonic()
    with pytest.raises(DaemonUnreachable, match=r"nobody is listening|no answer"):
        Client(socket_path, timeout=0.3).status()
    assert time.monotonic() - began < 5


def test_a_silent_daemon_times_out(socket_path: Path, daemon: Callable[[Script], FakeDaemon]) -> None:
    daemon(lambda req: [])
    with pytest.raises(DaemonUnreachable, match=r"no answer from .* within 0.3s; is importd running"):
        Client(socket_path, timeout=0.3).status()


def test_events_arrive_as_envelopes(socket_path: Path) -> None:
    path = events_path_for(socket_path)
    with pytest.raises(DaemonUnreachable, match="no event socket"):
        EventStream(path, ())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint_for(path))
    try:
        with Client(socket_path).events(("gaps",)) as events:
            envelope = {"v": 1, "topic": "gaps", "seq": 1, "at": "2026-11-21T08:00:00.412Z", "data": {}}
            deadline = time.monotonic() + 5
            got = None
            while got is None and time.monotonic() < deadline:  # a subscription takes a moment
                pub.send_multipart([b"run", b"{}"])  # not subscribed
                pub.send_multipart([b"gaps", json.dumps(envelope).encode()])
                got = events.next_event(timeout=0.1)
            assert got == envelope
            while events.next_event(timeout=0.2) is not None:
                pass  # the copies sent while the subscription was on its way
            pub.send_multipart([b"gaps", b"not json"])
            assert events.next_event(timeout=0.5) is None
    finally:
        pub.close(linger=0)
        ctx.term()


def test_a_request_over_the_limit_is_not_sent(tmp_path: Path) -> None:
    from importctl.protocol import MAX_REQUEST_BYTES

    sock = tmp_path / "c.sock"
    sock.write_bytes(b"")  # never reached: refused before the socket is looked at
    with pytest.raises(DaemonError) as err:
        Client(sock).find("x" * MAX_REQUEST_BYTES)
    assert err.value.code is ErrorCode.INVALID and "not sent" in err.value.message
    assert len(err.value.message) < 200


def test_not_accessible_names_the_group_that_grants_the_socket(tmp_path: Path) -> None:
    import grp
    import os

    from importctl.client import not_accessible

    sock = tmp_path / "run" / "control.sock"
    sock.parent.mkdir()
    sock.write_bytes(b"")
    group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    line = not_accessible(sock)
    assert "\n" not in line and str(sock) in line and "not accessible" in line
    assert (f"group {group!r}" in line) or (group == "root" and "only root" in line)
    # A socket behind a folder that does not exist: the nearest folder that does decides.
    assert "not accessible" in not_accessible(tmp_path / "gone" / "control.sock")
