"""The client library: one DEALER socket, timeouts, and error codes mapped to exceptions.

DEALER, not REQ: a REQ socket is stuck after a timeout, and a client must never hang when the
daemon is down. A fresh socket per call keeps replies from an earlier, timed-out call out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zmq

from importctl.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Method,
    Reply,
    Request,
    decode_reply,
    default_socket_path,
    endpoint_for,
    events_path_for,
)

DEFAULT_TIMEOUT_S = 10.0
UNREACHABLE_HINT = "is importd running? try: systemctl status importd (or start it with: importd run)"


class ClientError(Exception):
    """Base of everything importctl shows to the operator as one line."""


class DaemonUnreachable(ClientError):
    pass


class DaemonError(ClientError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, socket_path: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket_path = socket_path or default_socket_path(for_daemon=False)
        self.timeout = timeout
        self.daemon_version: str | None = None

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        reply = self.call_raw(Request(method=method, params=params or {}))
        if not reply.ok:
            raise DaemonError(reply.error_code or ErrorCode.INTERNAL, reply.error_message)
        return reply.result

    def call_raw(self, request: Request) -> Reply:
        return self.send_frame(request.encode(), request.id)

    def send_frame(self, frame: bytes, request_id: str | None = None) -> Reply:
        """Send one raw frame and wait for the reply (tests use this for malformed input)."""
        if not self.socket_path.exists():
            raise DaemonUnreachable(f"no control socket at {self.socket_path}; {UNREACHABLE_HINT}")
        if not os.access(self.socket_path, os.R_OK | os.W_OK):
            raise DaemonUnreachable(
                f"permission denied on {self.socket_path}; add yourself to the importd group "
                "(usermod -aG importd $USER) or use sudo"
            )
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        deadline_ms = int(self.timeout * 1000)
        # IMMEDIATE: queue nothing until a daemon has accepted the connection, so a socket
        # file with nobody behind it times out on send instead of waiting forever.
        sock.setsockopt(zmq.SNDTIMEO, deadline_ms)
        try:
            sock.connect(endpoint_for(self.socket_path))
            try:
                sock.send(frame)
            except zmq.Again:
                raise DaemonUnreachable(
                    f"nobody is listening on {self.socket_path}; {UNREACHABLE_HINT}"
                ) from None
            while True:
                if not sock.poll(deadline_ms, zmq.POLLIN):
                    raise DaemonUnreachable(
                        f"no answer from {self.socket_path} within {self.timeout:g}s; {UNREACHABLE_HINT}"
                    )
                frames = sock.recv_multipart()
                payload = frames[-1]
                try:
                    reply = decode_reply(payload)
                except Exception as exc:
                    raise DaemonError(
                        ErrorCode.INTERNAL, f"unreadable reply from the daemon: {exc}"
                    ) from None
                if request_id is None or reply.id in (request_id, None):
                    break
        finally:
            sock.close(linger=0)
        self.daemon_version = reply.daemon_version
        return reply

    # One method per API call: the CLI never builds a request by hand.
    def status(self) -> dict[str, Any]:
        return self.call(Method.STATUS)  # type: ignore[no-any-return]

    def scan(self, target: str | None) -> dict[str, Any]:
        return self.call(Method.SCAN, {"target": target})  # type: ignore[no-any-return]

    def scan_progress(self, scan_id: int) -> dict[str, Any]:
        return self.call(Method.SCAN_PROGRESS, {"scan_id": scan_id})  # type: ignore[no-any-return]

    def find(self, query: str) -> list[dict[str, Any]]:
        return self.call(Method.FIND, {"query": query, "cwd": _cwd()})  # type: ignore[no-any-return]

    def errors(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self.call(Method.ERRORS, {"limit": limit})  # type: ignore[no-any-return]

    def gaps(
        self,
        entity: str | None = None,
        entity_type: str | None = None,
        run: int | None = None,
        recompute: bool = False,
    ) -> dict[str, Any]:
        params = {"entity": entity, "type": entity_type, "run": run, "recompute": recompute}
        return self.call(Method.GAPS, params)  # type: ignore[no-any-return]

    def unmatched(self, root: str | None = None, limit: int = 1000) -> dict[str, Any]:
        return self.call(Method.UNMATCHED, {"root": root, "limit": limit})  # type: ignore[no-any-return]

    def conflicts(self, status: str = "open") -> list[dict[str, Any]]:
        return self.call(Method.CONFLICTS, {"status": status})  # type: ignore[no-any-return]

    def resolve(self, conflict_id: int, action: str) -> dict[str, Any]:
        return self.call(Method.RESOLVE, {"conflict_id": conflict_id, "action": action})  # type: ignore[no-any-return]

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.call(Method.RUNS, {"limit": limit})  # type: ignore[no-any-return]

    def run(self, run_id: int, log_limit: int = 10_000) -> dict[str, Any]:
        return self.call(Method.RUN, {"run_id": run_id, "log_limit": log_limit})  # type: ignore[no-any-return]

    def cancel(self, run_id: int) -> dict[str, Any]:
        return self.call(Method.CANCEL, {"run_id": run_id})  # type: ignore[no-any-return]

    def dupes(self, kind: str | None = None, threshold: float | None = None) -> dict[str, Any]:
        return self.call(Method.DUPES, {"kind": kind, "threshold": threshold})  # type: ignore[no-any-return]

    def info(self, query: str) -> dict[str, Any]:
        return self.call(Method.INFO, {"query": query, "cwd": _cwd()})  # type: ignore[no-any-return]

    def repair_links(self, target: str | None) -> dict[str, Any]:
        return self.call(Method.REPAIR_LINKS, {"target": target})  # type: ignore[no-any-return]

    def apply_links(self, actions: list[dict[str, Any]], who: str) -> dict[str, Any]:
        return self.call(Method.APPLY_LINKS, {"actions": actions, "who": who})  # type: ignore[no-any-return]

    def trash(self, include_restored: bool = False) -> dict[str, Any]:
        return self.call(Method.TRASH, {"all": include_restored})  # type: ignore[no-any-return]

    def restore(self, record_id: int, who: str) -> dict[str, Any]:
        return self.call(Method.RESTORE, {"id": record_id, "who": who})  # type: ignore[no-any-return]

    def check(self, target: str | None, verify_hash: bool, budget: str | None) -> dict[str, Any]:
        params = {"target": target, "verify_hash": verify_hash, "budget": budget}
        return self.call(Method.CHECK, params)  # type: ignore[no-any-return]

    def check_result(self, run_id: int) -> dict[str, Any]:
        return self.call(Method.CHECK_RESULT, {"run_id": run_id})  # type: ignore[no-any-return]

    def events(self, topics: tuple[str, ...] = ()) -> EventStream:
        return EventStream(events_path_for(self.socket_path), topics)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was deleted
        return None


class EventStream:
    """A SUB socket on the daemon's live events; iterate with `next_event(timeout)`."""

    def __init__(self, path: Path, topics: tuple[str, ...]) -> None:
        if not path.exists():
            raise DaemonUnreachable(f"no event socket at {path}; {UNREACHABLE_HINT}")
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for topic in topics or ("",):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint_for(path))

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        try:
            event = json.loads(frames[-1])
        except ValueError:
            return None
        return event if isinstance(event, dict) else None

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PROTOCOL_VERSION", "Client", "ClientError", "DaemonError", "DaemonUnreachable"]
