"""The wire protocol between importd and importctl.

Both sides import this module, so it uses the standard library only. A request is one JSON object
in one ZeroMQ frame::

    {"v": 1, "id": "…", "method": "status", "params": {…}}

and the reply is::

    {"v": 1, "id": "…", "ok": true, "result": …, "daemon_version": "…"}
    {"v": 1, "id": "…", "ok": false, "error": {"code": "invalid", "message": "…"}, "daemon_version": "…"}

Paths travel as ``str`` decoded with ``os.fsdecode`` (surrogateescape), so names that are not
valid UTF-8 survive the JSON round trip: ``json`` writes lone surrogates as ``\\udcXX`` escapes and
reads them back unchanged.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
# Requests above this size get an `invalid` reply. The daemon also sets ZMQ_MAXMSGSIZE (far
# larger) so a runaway sender is disconnected before it can exhaust memory.
MAX_REQUEST_BYTES = 1 << 20
HARD_MAX_MESSAGE_BYTES = 64 << 20

# importctl exit codes (documented in the README).
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class ErrorCode(StrEnum):
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    DENIED = "denied"
    BUSY = "busy"
    INTERNAL = "internal"


class Method(StrEnum):
    STATUS = "status"
    SCAN = "scan"
    SCAN_PROGRESS = "scan_progress"
    FIND = "find"
    ERRORS = "errors"
    GAPS = "gaps"
    UNMATCHED = "unmatched"
    CONFLICTS = "conflicts"
    RESOLVE = "resolve"
    RUNS = "runs"
    RUN = "run"
    CANCEL = "cancel"
    DUPES = "dupes"
    INFO = "info"
    REPAIR_LINKS = "repair_links"
    APPLY_LINKS = "apply_links"
    TRASH = "trash"
    RESTORE = "restore"
    CHECK = "check"
    CHECK_RESULT = "check_result"


# Parameter schema per method: name -> (accepted types, required). The daemon validates every
# request against it before a handler runs, so handlers see well-typed params only.
ParamSpec = dict[str, tuple[tuple[type, ...], bool]]
METHOD_PARAMS: dict[str, ParamSpec] = {
    Method.STATUS: {},
    Method.SCAN: {"target": ((str, type(None)), False)},
    Method.SCAN_PROGRESS: {"scan_id": ((int,), True)},
    Method.FIND: {"query": ((str,), True), "cwd": ((str, type(None)), False)},
    Method.ERRORS: {"limit": ((int,), False)},
    Method.GAPS: {
        "entity": ((str, type(None)), False),
        "type": ((str, type(None)), False),
        "run": ((int, type(None)), False),
        "recompute": ((bool,), False),
    },
    Method.UNMATCHED: {"root": ((str, type(None)), False), "limit": ((int,), False)},
    Method.CONFLICTS: {"status": ((str,), False)},
    Method.RESOLVE: {"conflict_id": ((int,), True), "action": ((str,), True)},
    Method.RUNS: {"limit": ((int,), False)},
    Method.RUN: {"run_id": ((int,), True), "log_limit": ((int,), False)},
    Method.CANCEL: {"run_id": ((int,), True)},
    Method.DUPES: {"kind": ((str, type(None)), False), "threshold": ((int, float, type(None)), False)},
    Method.INFO: {"query": ((str,), True), "cwd": ((str, type(None)), False)},
    Method.REPAIR_LINKS: {"target": ((str, type(None)), False)},
    Method.APPLY_LINKS: {"actions": ((list,), True), "who": ((str,), True)},
    Method.TRASH: {"all": ((bool,), False)},
    Method.RESTORE: {"id": ((int,), True), "who": ((str,), True)},
    Method.CHECK: {
        "target": ((str, type(None)), False),
        "verify_hash": ((bool,), False),
        "budget": ((str, type(None)), False),
    },
    Method.CHECK_RESULT: {"run_id": ((int,), True)},
}
DUPE_KINDS = ("exact", "near", "face")
RESOLVE_ACTIONS = ("keep", "take_new")
# A run (scan) in one of these states has ended.
TERMINAL_STATES = ("completed", "partial", "failed", "cancelled", "skipped")


class ProtocolError(Exception):
    """A message that does not follow the protocol; carries the code to reply with."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def encode(self) -> bytes:
        return _dumps({"v": PROTOCOL_VERSION, "id": self.id, "method": self.method, "params": self.params})


@dataclass(frozen=True)
class Reply:
    id: str | None
    ok: bool
    result: Any = None
    error_code: ErrorCode | None = None
    error_message: str = ""
    daemon_version: str = ""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": self.id, "ok": self.ok}
        if self.ok:
            body["result"] = self.result
        else:
            code = self.error_code or ErrorCode.INTERNAL
            body["error"] = {"code": code.value, "message": self.error_message}
        body["daemon_version"] = self.daemon_version
        return _dumps(body)


def _dumps(obj: Any) -> bytes:
    # ensure_ascii keeps surrogate-escaped path bytes representable (as \udcXX escapes).
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _loads(frame: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.INVALID, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID, f"{what} must be a JSON object")
    return obj


def decode_request(frame: bytes) -> Request:
    """Parse and validate one request frame; raises ProtocolError with the code to reply with."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            ErrorCode.INVALID, f"request of {len(frame)} bytes exceeds the limit of {MAX_REQUEST_BYTES}"
        )
    obj = _loads(frame, "request")
    raw_id = obj.get("id")
    request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 128 else None
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.INVALID,
            f"unsupported protocol version {obj.get('v')!r} (this daemon speaks {PROTOCOL_VERSION})",
            request_id,
        )
    if request_id is None:
        raise ProtocolError(ErrorCode.INVALID, "request needs a string 'id' of at most 128 characters")
    method = obj.get("method")
    if not isinstance(method, str):
        raise ProtocolError(ErrorCode.INVALID, "request needs a string 'method'", request_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.INVALID, "'params' must be a JSON object", request_id)
    return Request(method=method, params=params, id=request_id)


def validate_params(method: str, params: dict[str, Any], spec: ParamSpec, request_id: str) -> None:
    for name in params:
        if name not in spec:
            raise ProtocolError(ErrorCode.INVALID, f"{method}: unknown parameter {name!r}", request_id)
    for name, (types, required) in spec.items():
        if name not in params:
            if required:
                raise ProtocolError(ErrorCode.INVALID, f"{method}: missing parameter {name!r}", request_id)
            continue
        value = params[name]
        # bool is an int subclass; a flag is never a count.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ProtocolError(
                ErrorCode.INVALID,
                f"{method}: parameter {name!r} must be {wanted}, not {type(value).__name__}",
                request_id,
            )


def decode_reply(frame: bytes) -> Reply:
    obj = _loads(frame, "reply")
    ok = obj.get("ok") is True
    version = str(obj.get("daemon_version", ""))
    raw_id = obj.get("id")
    reply_id = raw_id if isinstance(raw_id, str) else None
    if ok:
        return Reply(id=reply_id, ok=True, result=obj.get("result"), daemon_version=version)
    err = obj.get("error")
    if not isinstance(err, dict):
        err = {}
    try:
        code = ErrorCode(str(err.get("code")))
    except ValueError:
        code = ErrorCode.INTERNAL
    return Reply(
        id=reply_id,
        ok=False,
        error_code=code,
        error_message=str(err.get("message", "")),
        daemon_version=version,
    )


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {127: "\\x7f", 10: "\\n", 9: "\\t", 13: "\\r"}


_NEEDS_ESCAPE = re.compile(rb"[\x00-\x1f\x7f]")


def display_path(raw: bytes) -> str:
    """How a path is shown to a person, by both sides: one printable line, undecodable bytes as
    \\xNN, control characters (newlines too) escaped."""
    if not _NEEDS_ESCAPE.search(raw):
        try:  # the common case, and 5x quicker than the general one (a cold import shows 100,000)
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def _runtime_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "importd"
    return Path(f"/tmp/importd-{os.getuid()}")


SYSTEM_SOCKET = Path("/run/importd/control.sock")


def default_socket_path(*, for_daemon: bool) -> Path:
    """Where the control socket lives when neither --socket nor IMPORTD_SOCKET says.

    Under systemd the unit's RuntimeDirectory= (``/run/importd``) holds it. By hand, the daemon
    uses the XDG runtime dir; the client prefers a running system daemon's socket when it exists.
    """
    env = os.environ.get("IMPORTD_SOCKET")
    if env:
        return Path(env)
    if for_daemon:
        runtime = os.environ.get("RUNTIME_DIRECTORY")
        if runtime:
            return Path(runtime.split(":")[0]) / "control.sock"
        return _runtime_dir() / "control.sock"
    if SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    return _runtime_dir() / "control.sock"


def events_path_for(socket_path: Path) -> Path:
    """The PUB socket of live events sits beside the control socket."""
    return socket_path.with_name("events.sock")


def endpoint_for(socket_path: Path) -> str:
    return f"ipc://{socket_path}"
