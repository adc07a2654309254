"""The client library: one DEALER socket, timeouts, and error codes mapped to exceptions.

DEALER, not REQ: a REQ socket is stuck after a timeout, and a client must never hang when the
daemon is down. A fresh socket per call keeps replies from an earlier, timed-out call out.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import zmq

from importctl.protocol import (
    DEFAULT_CONFLICT_STATUS,
    DEFAULT_ERRORS_LIMIT,
    DEFAULT_LEGACY_ROWS_LIMIT,
    DEFAULT_REPORT_GROUPS,
    DEFAULT_RUN_LOG_LIMIT,
    DEFAULT_RUNS_LIMIT,
    DEFAULT_UNMATCHED_LIMIT,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    ApplyLinksReply,
    CancelReply,
    CheckResultReply,
    ConfirmMissingReply,
    ConflictReply,
    CsvImportReply,
    DriftReply,
    DupesReply,
    EnrichReply,
    EntityReply,
    EntitySummaryReply,
    ErrorCode,
    ErrorReply,
    Event,
    FileReply,
    ForgetReply,
    GapsReply,
    ImportProgressReply,
    InfoReply,
    LinkAction,
    Method,
    MigrateLegacyReply,
    PauseReply,
    PendingReply,
    PreviewReply,
    RepairLinksReply,
    Reply,
    ReportReply,
    Request,
    ResolveReply,
    RestoreReply,
    RunDetailReply,
    RunReply,
    ScanReply,
    ScansReply,
    StatusReply,
    StreamChunkReply,
    StreamReply,
    SweepProgress,
    TagCountReply,
    TrashReply,
    UnapplyReply,
    UnmatchedReply,
    ValidateReply,
    decode_reply,
    default_socket_path,
    endpoint_for,
    events_path_for,
)

DEFAULT_TIMEOUT_S = 10.0
MIGRATION_TIMEOUT_S = 3600.0
# An import answers when its last row is in: a big spreadsheet takes minutes, not seconds.
IMPORT_TIMEOUT_S = 24 * 3600.0
# The HTML report reads the whole catalog and makes its thumbnails (within a minute) first.
REPORT_TIMEOUT_S = 180.0
# `validate` asks the provider, which may make it wait (its rate limit, Retry-After, three tries).
VALIDATE_TIMEOUT_S = 180.0
UNREACHABLE_HINT = "is importd running? try: systemctl status importd (or start it with: importd run)"


class ClientError(Exception):
    """Base of everything importctl shows to the operator as one line."""


class DaemonUnreachable(ClientError):
    pass


class SocketNotAccessible(DaemonUnreachable):
    """The socket is there, but this user may not open it (exit 3, with the group that may)."""


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
        if len(frame) > MAX_REQUEST_BYTES:
            # The daemon would cut the connection off unanswered (ZMQ_MAXMSGSIZE): say it here.
            raise DaemonError(
                ErrorCode.INVALID,
                f"request of {len(frame):,} bytes is over the limit of {MAX_REQUEST_BYTES:,}; not sent",
            )
        try:
            there = self.socket_path.exists()
            allowed = there and os.access(self.socket_path, os.R_OK | os.W_OK)
        except PermissionError:  # a folder on the way this user may not enter
            there, allowed = True, False
        if not there:
            raise DaemonUnreachable(f"no control socket at {self.socket_path}; {UNREACHABLE_HINT}")
        if not allowed:
            raise SocketNotAccessible(not_accessible(self.socket_path))
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

    # One method per API call: the CLI never builds a request by hand. Each returns the shape
    # protocol.py declares for its method (the daemon builds the same TypedDicts).
    def status(self, site: bool = False) -> StatusReply:
        return cast(StatusReply, self.call(Method.STATUS, {"site": site} if site else None))

    def scan(self, target: str | None) -> ScansReply:
        return cast(ScansReply, self.call(Method.SCAN, {"target": target}))

    def scan_progress(self, scan_id: int) -> ScanReply:
        return cast(ScanReply, self.call(Method.SCAN_PROGRESS, {"scan_id": scan_id}))

    def find(self, query: str, include_forgotten: bool = False, site: bool = False) -> list[FileReply]:
        params = {"query": query, "cwd": _cwd(), "all": include_forgotten, "site": site}
        return cast(list[FileReply], self.call(Method.FIND, params))

    def errors(self, limit: int = DEFAULT_ERRORS_LIMIT) -> list[ErrorReply]:
        return cast(list[ErrorReply], self.call(Method.ERRORS, {"limit": limit}))

    def gaps(
        self,
        entity: str | None = None,
        entity_type: str | None = None,
        run: int | None = None,
        recompute: bool = False,
        site: bool = False,
    ) -> GapsReply:
        params = {"entity": entity, "type": entity_type, "run": run, "recompute": recompute, "site": site}
        return cast(GapsReply, self.call(Method.GAPS, params))

    def unmatched(self, root: str | None = None, limit: int = DEFAULT_UNMATCHED_LIMIT) -> UnmatchedReply:
        return cast(UnmatchedReply, self.call(Method.UNMATCHED, {"root": root, "limit": limit}))

    def conflicts(self, status: str = DEFAULT_CONFLICT_STATUS) -> list[ConflictReply]:
        return cast(list[ConflictReply], self.call(Method.CONFLICTS, {"status": status}))

    def resolve(self, conflict_id: int, action: str) -> ResolveReply:
        params = {"conflict_id": conflict_id, "action": action}
        return cast(ResolveReply, self.call(Method.RESOLVE, params))

    def runs(self, limit: int = DEFAULT_RUNS_LIMIT) -> list[RunReply]:
        return cast(list[RunReply], self.call(Method.RUNS, {"limit": limit}))

    def run(self, run_id: int, log_limit: int = DEFAULT_RUN_LOG_LIMIT) -> RunDetailReply:
        params = {"run_id": run_id, "log_limit": log_limit}
        return cast(RunDetailReply, self.call(Method.RUN, params))

    def cancel(self, run_id: int) -> CancelReply:
        return cast(CancelReply, self.call(Method.CANCEL, {"run_id": run_id}))

    def confirm_missing(self, root: str) -> ConfirmMissingReply:
        return cast(ConfirmMissingReply, self.call(Method.CONFIRM_MISSING, {"root": root}))

    def entities(self, entity_type: str | None = None) -> list[EntitySummaryReply]:
        return cast(list[EntitySummaryReply], self.call(Method.ENTITIES, {"type": entity_type}))

    def entity(self, entity: str) -> EntityReply:
        return cast(EntityReply, self.call(Method.ENTITY, {"entity": entity}))

    def preview(
        self,
        target: str,
        rules: str | None = None,
        rules_file: tuple[str, str] | None = None,
        limit: int = 1000,
    ) -> PreviewReply:
        """`rules`: a shipped set's name; `rules_file`: (name, TOML text) of a rule file."""
        params: dict[str, object] = {"target": target, "cwd": _cwd(), "rules": rules, "limit": limit}
        if rules_file is not None:
            params["rules_name"], params["rules_file"] = rules_file
        return cast(PreviewReply, self.call(Method.PREVIEW, params))

    def dupes(
        self, kind: str | None = None, threshold: float | None = None, site: bool = False
    ) -> DupesReply:
        params = {"kind": kind, "threshold": threshold, "site": site}
        return cast(DupesReply, self.call(Method.DUPES, params))

    def info(self, query: str) -> InfoReply:
        return cast(InfoReply, self.call(Method.INFO, {"query": query, "cwd": _cwd()}))

    def repair_links(self, target: str | None) -> RepairLinksReply:
        return cast(RepairLinksReply, self.call(Method.REPAIR_LINKS, {"target": target}))

    def apply_links(self, actions: list[LinkAction], who: str) -> ApplyLinksReply:
        return cast(ApplyLinksReply, self.call(Method.APPLY_LINKS, {"actions": actions, "who": who}))

    def trash(self, include_restored: bool = False) -> TrashReply:
        return cast(TrashReply, self.call(Method.TRASH, {"all": include_restored}))

    def restore(self, record_id: int, who: str) -> RestoreReply:
        return cast(RestoreReply, self.call(Method.RESTORE, {"id": record_id, "who": who}))

    def check(self, target: str | None, verify_hash: bool, budget: str | None) -> SweepProgress:
        params = {"target": target, "verify_hash": verify_hash, "budget": budget}
        return cast(SweepProgress, self.call(Method.CHECK, params))

    def check_result(self, run_id: int) -> CheckResultReply:
        return cast(CheckResultReply, self.call(Method.CHECK_RESULT, {"run_id": run_id}))

    def forget(self, path: str, undo: bool = False, dry_run: bool = False) -> ForgetReply:
        params = {"path": path, "cwd": _cwd(), "undo": undo, "dry_run": dry_run}
        return cast(ForgetReply, self.call(Method.FORGET, params))

    def migrate_legacy(
        self, db: str, mapping: str, commit: bool = False, limit: int = DEFAULT_LEGACY_ROWS_LIMIT
    ) -> MigrateLegacyReply:
        """Paths are made absolute here: the daemon reads both files (they must be readable by
        the service). A migration reads the whole old catalog, so it waits longer than a call."""
        params = {
            "db": os.path.abspath(db),
            "mapping": os.path.abspath(mapping),
            "commit": commit,
            "limit": limit,
        }
        saved, self.timeout = self.timeout, max(self.timeout, MIGRATION_TIMEOUT_S)
        try:
            return cast(MigrateLegacyReply, self.call(Method.MIGRATE_LEGACY, params))
        finally:
            self.timeout = saved

    def pause(self, what: str) -> PauseReply:
        return cast(PauseReply, self.call(Method.PAUSE, {"what": what}))

    def resume(self, what: str) -> PauseReply:
        return cast(PauseReply, self.call(Method.RESUME, {"what": what}))

    def tags(self) -> list[TagCountReply]:
        return cast(list[TagCountReply], self.call(Method.TAGS))

    def drift(self, root: str | None = None) -> DriftReply:
        return cast(DriftReply, self.call(Method.DRIFT, {"root": root}))

    def export(self, fmt: str = "jsonl") -> StreamReply:
        return cast(StreamReply, self.call(Method.EXPORT, {"format": fmt}))

    def backup(self) -> StreamReply:
        return cast(StreamReply, self.call(Method.BACKUP))

    def stream_next(self, stream: str, cancel: bool = False) -> StreamChunkReply:
        return cast(StreamChunkReply, self.call(Method.STREAM_NEXT, {"stream": stream, "cancel": cancel}))

    def pull(self, stream: str) -> Iterator[StreamChunkReply]:
        """A stream's pieces until the last; a caller that stops early (an error writing, Ctrl-C)
        closes it on the daemon, which would otherwise hold it until it idles out."""
        done = False
        try:
            while not done:
                piece = self.stream_next(stream)
                done = piece["done"]
                yield piece
        finally:
            if not done:
                # If this fails too, the daemon closes the stream when it idles out.
                with contextlib.suppress(ClientError):
                    self.stream_next(stream, cancel=True)

    def report(self, root: str | None = None, groups: int = DEFAULT_REPORT_GROUPS) -> ReportReply:
        """The HTML report's page and its figures; waits at least `REPORT_TIMEOUT_S`."""
        saved, self.timeout = self.timeout, max(self.timeout, REPORT_TIMEOUT_S)
        try:
            return cast(ReportReply, self.call(Method.REPORT, {"root": root, "groups": groups}))
        finally:
            self.timeout = saved

    def events(self, topics: tuple[str, ...] = ()) -> EventStream:
        return EventStream(events_path_for(self.socket_path), topics)

    def import_csv(
        self,
        path: str,
        entity_type: str,
        key: str,
        columns: list[tuple[str, str]],
        *,
        create: bool = False,
        overwrite: bool = False,
        commit: bool = False,
        limit: int | None = None,
        job: str | None = None,
    ) -> CsvImportReply:
        params: dict[str, Any] = {
            "path": path,
            "type": entity_type,
            "key": key,
            "map": [list(pair) for pair in columns],
            "create": create,
            "overwrite": overwrite,
            "commit": commit,
            "job": job,
        }
        if limit is not None:
            params["limit"] = limit
        patient = Client(self.socket_path, max(self.timeout, IMPORT_TIMEOUT_S))
        try:
            return cast(CsvImportReply, patient.call(Method.IMPORT_CSV, params))
        finally:
            self.daemon_version = patient.daemon_version or self.daemon_version

    def import_progress(self, job: str) -> ImportProgressReply:
        return cast(ImportProgressReply, self.call(Method.IMPORT_PROGRESS, {"job": job}))

    def enrich(
        self,
        *,
        entity: str | None = None,
        entity_type: str | None = None,
        every: bool = False,
        dry_run: bool = False,
    ) -> EnrichReply:
        params = {"entity": entity, "type": entity_type, "all": every, "dry_run": dry_run}
        return cast(EnrichReply, self.call(Method.ENRICH, params))

    def enrich_progress(self, job: str) -> EnrichReply:
        return cast(EnrichReply, self.call(Method.ENRICH_PROGRESS, {"job": job}))

    def pending(self) -> list[PendingReply]:
        return cast(list[PendingReply], self.call(Method.PENDING))

    def validate(
        self, entity: str, *, pick: int | None = None, provider_id: int | None = None, none: bool = False
    ) -> ValidateReply:
        params = {"entity": entity, "pick": pick, "provider_id": provider_id, "none": none}
        patient = Client(self.socket_path, max(self.timeout, VALIDATE_TIMEOUT_S))
        try:
            return cast(ValidateReply, patient.call(Method.VALIDATE, params))
        finally:
            self.daemon_version = patient.daemon_version or self.daemon_version

    def unapply(self, entity: str | None = None, run_id: int | None = None) -> UnapplyReply:
        return cast(UnapplyReply, self.call(Method.UNAPPLY, {"entity": entity, "run_id": run_id}))


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

    def next_event(self, timeout: float) -> Event | None:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        frames = self.sock.recv_multipart()
        try:
            event = json.loads(frames[-1])
        except ValueError:
            return None
        return cast(Event, event) if isinstance(event, dict) else None

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["PROTOCOL_VERSION", "Client", "ClientError", "DaemonError", "DaemonUnreachable"]


def not_accessible(path: Path) -> str:
    """One line: the socket is not this user's to open, and which group grants it (the group of
    the socket file, or of the first folder on the way this user may not enter)."""
    user = _user_name()
    gate = path
    for candidate in (path, *path.parents):  # the nearest this user can see shuts them out
        try:
            candidate.stat()
        except OSError:
            continue
        gate = candidate
        break
    try:
        gid = gate.stat().st_gid
        group = grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        group = "importd"
    if group == "root":
        return (
            f"the control socket {path} is not accessible to {user}: only root may use it (sudo importctl …)"
        )
    return (
        f"the control socket {path} is not accessible to {user}: members of group {group!r} may use it "
        f"(sudo usermod -aG {group} {user}, then log in again)"
    )


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"
