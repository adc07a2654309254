"""The wire protocol between importd and importctl.

Both sides import this module, so it uses the standard library only. A request is one JSON object
in one ZeroMQ frame::

    {"v": 1, "id": "…", "method": "status", "params": {…}}

and the reply is::

    {"v": 1, "id": "…", "ok": true, "result": …, "daemon_version": "…"}
    {"v": 1, "id": "…", "ok": false, "error": {"code": "invalid", "message": "…"}, "daemon_version": "…"}

Paths travel as ``str`` decoded with ``os.fsdecode`` (surrogateescape), so names that are not
valid UTF-8 survive the JSON round trip: ``json`` writes lone surrogates as ``\\udcXX`` escapes and
reads them back unchanged. Times travel as ISO 8601 UTC with milliseconds and ``Z`` (`iso_utc`).

Every method's ``result`` has a `TypedDict` below (`REPLY_SHAPES` maps method to shape); the
daemon builds them and the client returns them. The README's JSON shapes are these.
"""

# No `from __future__ import annotations`: on Python 3.11 it hides NotRequired from the TypedDicts'
# runtime view (`__required_keys__`), which the tests check the replies against.

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, Required, TypedDict, overload

PROTOCOL_VERSION = 1
# The largest request. The client refuses to send more; the daemon sets ZMQ_MAXMSGSIZE to it, so
# libzmq cuts off a sender of more when it reads the frame's length, before buffering it.
MAX_REQUEST_BYTES = 1 << 20
# How deep a request's params may nest (the deepest real one, apply_links' actions, is 3), and
# the range of a whole number: what SQLite and PostgreSQL store (a signed 64-bit integer).
MAX_PARAMS_DEPTH = 16
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

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
    FORGET = "forget"
    CONFIRM_MISSING = "confirm_missing"
    ENTITIES = "entities"
    ENTITY = "entity"
    PREVIEW = "preview"
    MIGRATE_LEGACY = "migrate_legacy"
    PAUSE = "pause"
    RESUME = "resume"
    TAGS = "tags"
    IMPORT_CSV = "import_csv"
    IMPORT_PROGRESS = "import_progress"
    DRIFT = "drift"
    EXPORT = "export"
    BACKUP = "backup"
    STREAM_NEXT = "stream_next"
    REPORT = "report"
    ENRICH = "enrich"
    ENRICH_PROGRESS = "enrich_progress"
    PENDING = "pending"
    VALIDATE = "validate"
    UNAPPLY = "unapply"


# Parameter schema per method: name -> (accepted types, required). The daemon validates every
# request against it before a handler runs, so handlers see well-typed params only.
ParamSpec = dict[str, tuple[tuple[type, ...], bool]]
METHOD_PARAMS: dict[str, ParamSpec] = {
    Method.STATUS: {"site": ((bool,), False)},
    Method.SCAN: {"target": ((str, type(None)), False)},
    Method.SCAN_PROGRESS: {"scan_id": ((int,), True)},
    Method.FIND: {
        "query": ((str,), True),
        "cwd": ((str, type(None)), False),
        "all": ((bool,), False),
        "site": ((bool,), False),
    },
    Method.ERRORS: {"limit": ((int,), False)},
    Method.GAPS: {
        "entity": ((str, type(None)), False),
        "type": ((str, type(None)), False),
        "run": ((int, type(None)), False),
        "recompute": ((bool,), False),
        "site": ((bool,), False),
    },
    Method.UNMATCHED: {"root": ((str, type(None)), False), "limit": ((int,), False)},
    Method.CONFLICTS: {"status": ((str,), False)},
    Method.RESOLVE: {"conflict_id": ((int,), True), "action": ((str,), True)},
    Method.RUNS: {"limit": ((int,), False)},
    Method.RUN: {"run_id": ((int,), True), "log_limit": ((int,), False)},
    Method.CANCEL: {"run_id": ((int,), True)},
    Method.DUPES: {
        "kind": ((str, type(None)), False),
        "threshold": ((int, float, type(None)), False),
        "site": ((bool,), False),
    },
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
    Method.FORGET: {
        "path": ((str,), True),
        "cwd": ((str, type(None)), False),
        "undo": ((bool,), False),
        "dry_run": ((bool,), False),
    },
    Method.CONFIRM_MISSING: {"root": ((str,), True)},
    Method.ENTITIES: {"type": ((str, type(None)), False)},
    Method.ENTITY: {"entity": ((str,), True)},
    Method.PREVIEW: {
        "target": ((str,), True),
        "cwd": ((str, type(None)), False),
        "rules": ((str, type(None)), False),
        "rules_file": ((str, type(None)), False),
        "rules_name": ((str, type(None)), False),
        "limit": ((int,), False),
    },
    Method.MIGRATE_LEGACY: {
        "db": ((str,), True),
        "mapping": ((str,), True),
        "commit": ((bool,), False),
        "limit": ((int,), False),
    },
    Method.PAUSE: {"what": ((str,), True)},
    Method.RESUME: {"what": ((str,), True)},
    Method.TAGS: {},
    Method.IMPORT_CSV: {
        "path": ((str,), True),
        "type": ((str,), True),
        "key": ((str,), False),
        "map": ((list,), True),
        "create": ((bool,), False),
        "overwrite": ((bool,), False),
        "commit": ((bool,), False),
        "limit": ((int,), False),
        "job": ((str, type(None)), False),
    },
    Method.IMPORT_PROGRESS: {"job": ((str,), True)},
    Method.DRIFT: {"root": ((str, type(None)), False)},
    Method.EXPORT: {"format": ((str,), False)},
    Method.BACKUP: {},
    Method.STREAM_NEXT: {"stream": ((str,), True), "cancel": ((bool,), False)},
    Method.REPORT: {"root": ((str, type(None)), False), "groups": ((int,), False)},
    Method.ENRICH: {
        "entity": ((str, type(None)), False),
        "type": ((str, type(None)), False),
        "all": ((bool,), False),
        "dry_run": ((bool,), False),
    },
    Method.ENRICH_PROGRESS: {"job": ((str,), True)},
    Method.PENDING: {},
    Method.VALIDATE: {
        "entity": ((str,), True),
        "pick": ((int, type(None)), False),
        "provider_id": ((int, type(None)), False),
        "none": ((bool,), False),
    },
    Method.UNAPPLY: {"entity": ((str, type(None)), False), "run_id": ((int, type(None)), False)},
}
# Parameters that carry paths (apply_links' actions hold links and candidates): their strings may
# hold undecodable bytes as surrogate escapes (\udc80-\udcff). Every other string is text and
# must be valid Unicode throughout, since it reaches the catalog as UTF-8.
PATH_PARAMS = frozenset({"query", "cwd", "target", "path", "db", "mapping", "rules_file", "actions"})
# Parameters that name a catalog row by its id: PostgreSQL's `integer` columns hold the ids, so a
# larger number could name no row and would fail in the driver, not at the door.
ID_PARAMS = frozenset({"run_id", "run", "scan_id", "conflict_id", "id"})
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
# Defaults and bounds shared by the CLI, the client and the daemon.
DEFAULT_RUNS_LIMIT = 20
MAX_RUNS_LIMIT = 10_000
DEFAULT_ERRORS_LIMIT = 1000
MAX_ERRORS_LIMIT = 100_000
DEFAULT_UNMATCHED_LIMIT = 1000
MAX_UNMATCHED_LIMIT = 1_000_000
DEFAULT_RUN_LOG_LIMIT = 10_000
MAX_RUN_LOG_LIMIT = 1_000_000
DEFAULT_PREVIEW_LIMIT = 1000
MAX_PREVIEW_LIMIT = 1_000_000
DEFAULT_IMPORT_ROWS_LIMIT = 1000  # rows an import's reply lists (its totals count every row)
MAX_IMPORT_ROWS_LIMIT = 1_000_000
IMPORT_KEY_MODES = ("name", "path", "id")
IMPORT_ACTIONS = ("create", "update", "unchanged", "invalid", "conflict", "unmatched")
DEFAULT_REPORT_GROUPS = 200  # duplicate groups drawn per kind (the rest are counted)
MAX_REPORT_GROUPS = 2000
DEFAULT_CONFLICT_STATUS = "open"
CONFLICT_STATUSES = ("open", "kept", "taken", "merged", "kept_apart", "all")
DUPE_KINDS = ("exact", "near", "face")
RESOLVE_ACTIONS = ("keep", "take_new", "merge", "keep_apart")  # the first two for attributes
DEFAULT_LEGACY_ROWS_LIMIT = 1000  # rows a migrate-legacy reply lists (its totals count them all)
MAX_LEGACY_ROWS_LIMIT = 1_000_000
PAUSABLE = ("migration",)  # what `pause`/`resume` control
# A run (scan) in one of these states has ended.
TERMINAL_STATES = ("completed", "partial", "failed", "cancelled", "skipped")


@overload
def iso_utc(ts: float) -> str: ...
@overload
def iso_utc(ts: None) -> None: ...
def iso_utc(ts: float | None) -> str | None:
    """The one spelling of a time on the wire, events included: "2026-11-21T08:00:00.412Z"."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----- reply shapes: one per method's `result` ------------------------------------------------
# A time is a `Stamp`: ISO 8601 UTC with milliseconds and Z, or null when it has not happened.
Stamp = str | None


class ScanReply(TypedDict):
    """One scan (a reconcile run) and its progress: `scan_progress`, `scan`'s items, status's
    `last_scan`, and the data of a `run` event."""

    scan_id: int
    run_id: int | None
    root: str
    path: str
    trigger: str
    state: str
    files_seen: int
    changed: int
    pending: int
    vanished: int
    errors: int
    entities_created: int
    entities_updated: int
    files_registered: int
    duplicates: int
    started: Stamp
    finished: Stamp
    message: str


class ScansReply(TypedDict):
    scans: list[ScanReply]


class RootStatus(TypedDict):
    name: str
    path: str
    state: str  # watching | polling | offline | scanning | held
    files: int
    missing: int
    errors: int
    watch: str
    watch_error: str | None
    unreadable_dirs: int
    held: int  # files a mass disappearance would have marked missing, held (see confirm_missing)


class FileTotals(TypedDict):
    present: int
    missing: int
    error: int


class QueueStatus(TypedDict):
    settling: int
    hashing: int
    writing: int
    mapping: int


class StatusCounters(TypedDict):
    hashed_files: int
    hashed_bytes: int
    registered: int
    moved: int
    vanished: int
    errors: int


class Completeness(TypedDict):
    percent: float
    satisfied: int
    required: int
    orphaned: NotRequired[int]  # entities left out: every file gone (absent from old stored reports)


class FacesStatus(TypedDict):
    state: str  # enabled | disabled
    reason: str | None
    path: str | None


class FfmpegStatus(TypedDict):
    """The ffmpeg video fingerprints run: `source` is "path" (the system's) or "imageio-ffmpeg" (the
    wheel's static build); both None when there is none, and `problem` says why."""

    path: str | None
    source: str | None  # path | imageio-ffmpeg | None
    problem: str | None


class MediaStatus(TypedDict):
    enabled: bool
    ready: bool
    intake: int
    queued: int
    running: int
    done: int
    failed: int
    faces: FacesStatus
    ffmpeg: FfmpegStatus


class ScrubState(TypedDict):
    files: int
    verified: int
    oldest_verified: Stamp


class ScrubFigures(TypedDict, total=False):
    """How far a sweep's hash verification got (empty until it starts verifying)."""

    files: int
    bytes: int
    seconds: float
    stopped: str  # done | budget | stopped
    budget: str


class SweepProgress(TypedDict):
    """A sweep as it runs: `check`'s reply, `check_result`'s `progress`, status's `running`."""

    run_id: int
    state: str  # running | completed | failed | cancelled
    phase: str  # walking | verifying | done
    files_seen: int
    findings: int
    scrub: ScrubFigures
    message: str


class LastSweep(TypedDict):
    run_id: int
    state: str
    started: Stamp
    finished: Stamp
    counts: dict[str, int]
    exit_status: int | None


class MaintenanceStatus(TypedDict):
    links: dict[str, int]  # symlink state -> count
    scrub: ScrubState
    last_sweep: LastSweep | None
    running: NotRequired[SweepProgress]


class MigrationStatus(TypedDict):
    """The legacy catalog's backlog: rows waiting to be hashed in the background, and how many
    left `pending` (pending + done + missing + failed = every backlog row)."""

    state: str  # running | paused | done
    pending: int
    done: int
    missing: int
    failed: int
    rate_per_s: float


class HostStatus(TypedDict):
    """A server whose daemon uses the catalog (`status --site`)."""

    name: str
    state: str  # up | stopped | silent (no heartbeat for three intervals: down or cut off)
    this: bool  # the server that answered
    heartbeat: Stamp
    started: Stamp
    version: str
    pid: int
    roots: list[str]


class SiteRootStatus(TypedDict):
    host: str
    name: str
    path: str
    files: int
    missing: int
    errors: int
    bytes: int
    last_reconciled: Stamp


class SiteStatus(TypedDict):
    """Every server sharing the catalog: its daemons' heartbeats, roots and files."""

    hosts: list[HostStatus]
    roots: list[SiteRootStatus]
    files: FileTotals
    bytes: int
    completeness: Completeness


class StatusReply(TypedDict):
    version: str
    uptime_s: float
    pid: int
    catalog: str
    roots: list[RootStatus]
    files: FileTotals
    bytes: int
    queue: QueueStatus
    hashed_files_per_s: float
    hashed_mib_per_s: float
    counters: StatusCounters
    last_scan: ScanReply | None
    completeness: Completeness
    media: MediaStatus
    maintenance: MaintenanceStatus
    warnings: list[str]
    migration: MigrationStatus
    host: str  # this server's name in the catalog; `roots`, `files` and `bytes` are its own
    site: NotRequired[SiteStatus]  # `status --site`


class EntityLink(TypedDict):
    type: str
    name: str
    role: str | None
    pre_approved: bool


class FileTag(TypedDict):
    name: str
    color: str | None


class FileReply(TypedDict):
    """One catalog row: `find`'s items and `info`'s `file`."""

    path: str
    root: str
    relpath: str
    size: int
    blake3: str | None
    status: str  # present | missing | error | forgotten (`find --all` only)
    first_seen: Stamp
    last_seen: Stamp
    missing_since: Stamp
    error: str | None
    mtime_ns: int
    inode: int
    dev: int
    entity: EntityLink | None
    tags: list[FileTag]
    host: str  # the server the root is on


class ErrorReply(TypedDict):
    kind: str  # file | directory | root | extract | catalog (writes waiting: disk full, locked)
    path: str
    root: str
    error: str | None
    since: Stamp


class MissingItem(TypedDict):
    kind: str  # attribute | role | scene | episode
    name: str | int


class EntityGaps(TypedDict):
    type: str
    name: str
    missing: list[MissingItem]


class OrphanedEntity(TypedDict):
    """An entity none of whose files is present: listed once, left out of completeness."""

    type: str
    name: str
    since: Stamp  # when its last file went missing
    path: NotRequired[str]  # the folder its files were in, for `importctl forget`


class GapsReply(TypedDict):
    completeness: Completeness
    totals: NotRequired[dict[str, int]]
    entities: list[EntityGaps]
    orphaned: NotRequired[list[OrphanedEntity]]  # absent from reports stored before it existed


class EntitySummaryReply(TypedDict):
    """`entities`' items."""

    id: int
    type: str
    name: str
    key: str
    files: int  # linked files, forgotten ones aside
    present: int
    missing: int  # items the gap report lists for it
    conflicts: int  # open ones
    orphaned: bool


class AttributeValue(TypedDict):
    value: object  # any JSON value
    source: (
        str | None
    )  # folder_rule | metadata | sidecar | nfo | table | csv | legacy | provider | resolved | merge
    detail: str | None  # the file, run or conflict it came from
    at: Stamp


class EntityFile(TypedDict):
    role: str | None
    path: str
    status: str


class TagReply(TypedDict):
    name: str
    color: str | None


class EntityReply(TypedDict):
    """`entity ENTITY`: ENTITY is `TYPE:NAME`, a NAME unique across types, or a numeric id."""

    id: int
    type: str
    name: str
    key: str
    first_seen: Stamp
    updated: Stamp
    attributes: dict[str, AttributeValue]
    files: list[EntityFile]
    tags: list[TagReply]
    missing: list[MissingItem]
    orphaned_since: Stamp  # when its last file went missing; null unless orphaned
    conflicts: list[int]  # open conflict and merge proposal ids


class PreviewEntityRef(TypedDict):
    type: str
    name: str


class FieldChange(TypedDict):
    field: str
    current: object
    proposed: object
    conflict: bool  # differs from the value held: listed, never applied


class RowError(TypedDict):
    column: str | None
    message: str


class PreviewRow(TypedDict):
    """One entity of a preview (the CSV and legacy imports' rows share this shape)."""

    row: int
    key: str
    action: str  # create | update | unchanged
    entity: PreviewEntityRef | None
    changes: list[FieldChange]
    errors: list[RowError]
    files: dict[str, int]  # role -> files the tree has in it
    new_files: int  # files not linked to it yet


class PreviewReply(TypedDict):
    """`preview ROOT|PATH`: what a rule set would make of a tree now; nothing is written."""

    run_id: None
    committed: bool  # always false
    target: str
    rules: str
    totals: dict[str, int]  # create, update, unchanged (entities), unmatched (files)
    rows: list[PreviewRow]  # at most `limit`
    rows_total: int
    files: int
    mapped: int
    mapped_percent: float  # rounded down to one decimal
    roles: dict[str, int]
    unmatched_by_folder: dict[str, int]
    gaps: GapsReply  # the report that would result, for these entities


class UnmatchedFile(TypedDict):
    path: str
    root: str
    relpath: str


class UnmatchedReply(TypedDict):
    files: list[UnmatchedFile]
    total: int
    by_folder: dict[str, int]  # "root:folder" -> count


class ConflictReply(TypedDict):
    """kind `attribute`: `current` and `proposed` are values of `attribute`. kind `merge`: every
    file of `entity` moved into the folder of `other`; `current`/`proposed` are the two names,
    `source` the folder, `attribute` empty."""

    id: int
    kind: str  # attribute | merge
    entity: str
    type: str
    other: str | None
    attribute: str
    current: object  # any JSON value
    proposed: object
    source: str
    status: str  # open | kept | taken | merged | kept_apart
    created: Stamp
    resolved: Stamp


class ResolveReply(TypedDict):
    id: int
    entity: str
    attribute: str  # empty for a merge proposal
    value: object  # the attribute's value now; for a merge proposal, the other entity's name
    status: str  # kept | taken | merged | kept_apart


class RunCounts(TypedDict):
    files_seen: int
    changed: int
    files_registered: int
    vanished: int
    entities_created: int
    entities_updated: int
    duplicates: int
    errors: int


class RunReply(TypedDict):
    """`runs`' items."""

    id: int
    kind: str  # reconcile | sweep
    trigger: str
    root: str | None
    path: str | None
    status: str
    started: Stamp
    finished: Stamp
    counts: RunCounts
    detail: str | None


class RunLogEntry(TypedDict):
    entity: str | None
    action: str
    detail: str | None
    at: Stamp


class RunDetailReply(RunReply):
    """`run`: a run with its per-entity log."""

    log: list[RunLogEntry]


class CancelReply(TypedDict):
    id: int
    status: str


class ConfirmMissingReply(TypedDict):
    """`confirm_missing`: a root's held files, now marked missing (since they vanished)."""

    root: str
    confirmed: int


class DupeMember(TypedDict):
    path: str
    host: str  # the server the file is on
    blake3: str
    distance: NotRequired[float]  # exact and near
    similarity: NotRequired[float]  # face
    face: NotRequired[int]  # face: which face of the content


class DupeGroup(TypedDict):
    kind: str  # exact | near | face
    blake3: str
    paths: list[str]
    members: list[DupeMember]
    media: NotRequired[str]  # near and face: image | video


class DupesReply(TypedDict):
    groups: list[DupeGroup]
    faces: FacesStatus


class MediaFacts(TypedDict, total=False):
    """`info`'s `media`: an image's keys or a video's (audio's) keys, with `kind` always.
    Capture times are as the file states them (a camera's local time may carry no zone)."""

    kind: Required[str]  # image | video | audio
    width: int | None
    height: int | None
    warnings: list[str]
    # images
    format: str | None
    mode: str | None
    phash: str
    dhash: str
    taken_at: str | None
    camera: str | None
    # video and audio
    container: str | None
    duration_s: float | None
    frame_rate: float | None
    frame_count: int | None
    video_codec: str | None
    bit_rate: int | None
    audio: object
    created_at: str | None


class InfoHashes(TypedDict, total=False):
    phash: str
    dhash: str


class ExtractionReply(TypedDict):
    extractor: str
    version: int
    status: str
    error: str | None
    cpu_s: float | None


class FaceReply(TypedDict):
    index: int
    bbox: list[float]
    det_score: float


class InfoDuplicates(TypedDict):
    kind: str  # exact | near | face
    blake3: NotRequired[str]  # exact
    paths: NotRequired[list[str]]  # exact
    members: NotRequired[list[DupeMember]]  # near and face
    face: NotRequired[int]  # face: which face of this content


class FileValue(TypedDict):
    """A value an old catalog held about the file (`info`'s `attributes`)."""

    value: object  # any JSON value
    source: str  # legacy
    detail: str  # the old catalog and row
    at: Stamp


class InfoReply(TypedDict):
    file: FileReply
    paths: list[str]
    media: MediaFacts | None
    hashes: InfoHashes
    extractions: list[ExtractionReply]
    faces: list[FaceReply]
    duplicates: list[InfoDuplicates]
    attributes: dict[str, FileValue]


class LinkCandidate(TypedDict):
    path: str
    reason: str


class LinkProposal(TypedDict):
    link: str
    old_target: str
    candidates: list[LinkCandidate]
    action: str  # repair | trash | skip
    state: str
    note: str


class RepairLinksReply(TypedDict):
    links: list[LinkProposal]


class LinkAction(TypedDict):
    """One confirmed action sent with `apply_links`."""

    link: str
    action: str  # repair | trash
    candidate: NotRequired[str]  # repair: the chosen target


class LinkResult(TypedDict):
    link: str
    action: str
    status: str  # done | stale | failed
    detail: str
    new_target: NotRequired[str]
    trash_id: NotRequired[int]
    trash_path: NotRequired[str]


class ApplyLinksReply(TypedDict):
    results: list[LinkResult]


class TrashItem(TypedDict):
    id: int
    root: str
    relpath: str
    original: str
    trash_path: str
    target: str
    when: Stamp
    who: str
    restored_at: Stamp
    restored_by: str | None


class TrashReply(TypedDict):
    items: list[TrashItem]


class RestoreReply(TypedDict):
    id: int
    status: str
    path: str


class FindingReply(TypedDict):
    kind: str  # ghost | orphan | broken_link | hash_mismatch | unreadable | error
    path: str
    suggestion: str
    detail: NotRequired[str]
    missing_since: NotRequired[Stamp]  # a ghost that is a row marked missing: since when


class CheckResultReply(TypedDict):
    """A sweep: `state` "running" with its `progress`, or ended with its findings."""

    run_id: int
    state: str
    progress: NotRequired[SweepProgress]
    findings: NotRequired[list[FindingReply]]
    counts: NotRequired[dict[str, int]]
    started: NotRequired[Stamp]
    finished: NotRequired[Stamp]
    files_seen: NotRequired[int]
    scrub: NotRequired[ScrubFigures]
    exit_status: NotRequired[int]


class ForgottenFile(TypedDict):
    path: str
    root: str
    relpath: str
    missing_since: Stamp


class ForgetReply(TypedDict):
    """`forget`: the rows that became (or, with `dry_run`, would become) `status`: forgotten,
    or missing again with `undo`."""

    status: str  # forgotten | missing
    undo: bool
    dry_run: bool
    count: int
    files: list[ForgottenFile]


class LegacyRowError(TypedDict):
    column: str
    message: str


class LegacyRowReply(TypedDict):
    """One row of the old catalog and what the migration does with it."""

    row: int  # 1-based, in the old catalog's id order
    key: str  # the row's id there
    path: str | None
    action: str  # link | backlog | stale | missing | outside | invalid
    detail: str | None
    tags: list[str]
    errors: list[LegacyRowError]


class LegacyTotals(TypedDict):
    rows: int
    link: int
    backlog: int
    stale: int
    missing: int
    outside: int
    invalid: int


class MigrateLegacyReply(TypedDict):
    """`migrate_legacy`: the preview's shape is the CSV import's (run_id, committed, totals,
    rows); `more` counts rows decided but not listed (beyond `limit`)."""

    run_id: int | None
    committed: bool
    totals: LegacyTotals
    rows: list[LegacyRowReply]
    more: int


class PauseReply(TypedDict):
    """`pause` and `resume`: what was asked of, and its state now."""

    what: str  # migration
    migration: MigrationStatus


class TagCountReply(TypedDict):
    """`tags`' items."""

    name: str
    color: str | None
    files: int
    entities: int


class CsvChange(TypedDict):
    field: str
    current: object  # any JSON value; null when the entity has none
    proposed: object


class CsvRowError(TypedDict):
    column: str  # the column as the header spells it; empty for the row as a whole
    message: str


class CsvEntity(TypedDict):
    type: str
    name: str


class CsvRow(TypedDict):
    row: int  # the spreadsheet's row number (the header is row 1)
    key: str
    action: str  # create | update | unchanged | invalid | conflict | unmatched
    entity: CsvEntity | None
    changes: list[CsvChange]  # a conflict's are the changes with a current value, kept
    errors: list[CsvRowError]


class CsvTotals(TypedDict):
    create: int
    update: int
    unchanged: int
    invalid: int
    conflict: int
    unmatched: int


class CsvImportReply(TypedDict):
    """`import_csv`: `rows` lists the first `limit` rows in file order; `totals` count them all."""

    run_id: int | None
    committed: bool
    totals: CsvTotals
    rows: list[CsvRow]
    file: str
    encoding: str  # utf-8 | utf-8-sig | utf-16 | cp1252
    delimiter: str
    warnings: list[str]


class ImportProgressReply(TypedDict):
    job: str
    state: str  # running | done | unknown
    rows: int  # rows read so far


class DriftEntity(TypedDict):
    id: int
    type: str
    name: str


class DriftSource(TypedDict):
    """Where the entity's value came from (an `attribute_sources` row)."""

    kind: str  # folder_rule | metadata | sidecar | nfo | table | csv | legacy | provider | resolved | merge
    detail: str
    at: Stamp


class DriftItem(TypedDict):
    """One place where a sidecar (or NFO, or metadata.json) and the catalog disagree."""

    kind: str  # newer | older | differs | gone
    entity: DriftEntity
    attribute: str
    path: str  # the sidecar
    role: str | None
    sidecar: object  # what the file says (any JSON value); null when the file is gone
    catalog: object  # what the entity holds
    source: DriftSource | None
    sidecar_mtime: Stamp  # the file's mtime (now; for a gone file, as the catalog last saw it)
    conflict: int | None  # the open conflict that would settle it
    settle: str  # what would settle it: a command, or the file to rewrite


class DriftUnreadable(TypedDict):
    path: str
    reason: str


class DriftReply(TypedDict):
    """`drift [ROOT]`: one item per disagreement; `unreadable`: sidecars that cannot be read."""

    root: str | None
    items: list[DriftItem]
    totals: dict[str, int]  # newer, older, differs, gone
    unreadable: list[DriftUnreadable]


# ----- export and backup: a stream the client pulls a piece at a time --------------------------
EXPORT_FORMATS = ("jsonl",)


class StreamReply(TypedDict):
    """`export` and `backup`: a stream opened on the daemon; the client pulls its pieces with
    `stream_next` until `done` (an idle stream is closed after STREAM_IDLE_S)."""

    stream: str
    kind: str  # export | backup
    format: str  # jsonl (export) | sqlite (backup)


class StreamProgress(TypedDict):
    done: int
    total: int | None
    unit: str  # lines | pages


class StreamChunkReply(TypedDict):
    """A piece of a stream: `data` is dump text (`encoding` "text") or file bytes ("base64"),
    possibly empty while the daemon is still preparing; `summary` comes with `done`."""

    stream: str
    data: str
    encoding: str  # text | base64
    done: bool
    progress: StreamProgress
    summary: NotRequired[dict[str, Any]]


class ExportResult(TypedDict):
    """`importctl export --json`: what was written where."""

    out: str | None
    format: str
    version: int
    revision: str
    bytes: int
    lines: int
    rows: dict[str, int]
    files: dict[str, int]
    seconds: float


class BackupResult(TypedDict):
    """`importctl backup --json`."""

    out: str
    bytes: int
    pages: int
    page_size: int
    steps: int
    seconds: float
    integrity: str  # "ok", or the first problem PRAGMA integrity_check names


STREAM_IDLE_S = 120.0


class ReportSection(TypedDict):
    """One section of the HTML report: how many items it shows, and how many there are."""

    shown: int
    total: int


class ReportReply(TypedDict):
    """`report`: the self-contained HTML page (the client writes it to a file), and what it holds.
    Sections: roots, completeness (requirements satisfied / required), checklist (entities with
    gaps), orphaned, dupes_exact, dupes_near_image, dupes_near_video, integrity (last sweep's
    findings), thumbnails (pictures embedded / wanted)."""

    html: str
    bytes: int  # of `html`, UTF-8 encoded
    root: str | None
    generated: Stamp
    seconds: float
    sections: dict[str, ReportSection]


ENRICH_OUTCOMES = ("matched", "pending", "none", "skipped")


class EnrichCounts(TypedDict):
    considered: int  # entities asked about
    unchanged: int  # left out: settled before, unchanged since
    matched: int
    pending: int
    none: int  # the provider found no candidate
    skipped: int  # requests failed 3 times: asked again by the next run
    conflicts: int  # differing values, left as open conflicts
    requests: int  # sent to the provider
    cached: int  # answered from the response cache


class EnrichItem(TypedDict):
    entity: str
    type: str
    outcome: str  # ENRICH_OUTCOMES
    provider_id: int | None
    confidence: float | None
    applied: list[str]  # attributes filled (a dry run: that would be)
    reason: str


class EnrichReply(TypedDict):
    """`enrich` (the run just queued) and `enrich_progress` (where it is)."""

    job: str
    run_id: int | None  # None for a dry run (nothing is written)
    state: str  # queued | running | completed | failed | interrupted
    dry_run: bool
    trigger: str  # manual | automatic
    selection: str
    counts: EnrichCounts
    items: list[EnrichItem]  # at most 1000
    message: str
    started: Stamp
    finished: Stamp


class PendingCandidate(TypedDict):
    n: int  # what `validate --pick N` takes
    provider_id: int
    title: str
    original_title: str | None
    year: int | None
    confidence: float
    overview: str


class PendingReply(TypedDict):
    """`pending`'s items: entities waiting for the operator to choose their match."""

    id: int
    type: str
    name: str
    kind: str  # movie | tv
    reason: str | None
    since: Stamp
    candidates: list[PendingCandidate]


class ValidateReply(TypedDict):
    entity: str
    state: str  # matched | none
    provider_id: int | None
    applied: list[str]
    conflicts: int


class UnappliedValue(TypedDict):
    entity: str
    attribute: str
    value: object  # as it is now (restored, or left)
    restored: bool
    why: str


class UnapplyReply(TypedDict):
    restored: int
    left: int
    conflicts_withdrawn: int
    values: list[UnappliedValue]


# What each method answers; a list reply is the shape of its items in a list.
REPLY_SHAPES: dict[str, tuple[type, bool]] = {
    Method.STATUS: (StatusReply, False),
    Method.SCAN: (ScansReply, False),
    Method.SCAN_PROGRESS: (ScanReply, False),
    Method.FIND: (FileReply, True),
    Method.ERRORS: (ErrorReply, True),
    Method.GAPS: (GapsReply, False),
    Method.UNMATCHED: (UnmatchedReply, False),
    Method.CONFLICTS: (ConflictReply, True),
    Method.RESOLVE: (ResolveReply, False),
    Method.RUNS: (RunReply, True),
    Method.RUN: (RunDetailReply, False),
    Method.CANCEL: (CancelReply, False),
    Method.DUPES: (DupesReply, False),
    Method.INFO: (InfoReply, False),
    Method.REPAIR_LINKS: (RepairLinksReply, False),
    Method.APPLY_LINKS: (ApplyLinksReply, False),
    Method.TRASH: (TrashReply, False),
    Method.RESTORE: (RestoreReply, False),
    Method.CHECK: (SweepProgress, False),
    Method.CHECK_RESULT: (CheckResultReply, False),
    Method.FORGET: (ForgetReply, False),
    Method.CONFIRM_MISSING: (ConfirmMissingReply, False),
    Method.ENTITIES: (EntitySummaryReply, True),
    Method.ENTITY: (EntityReply, False),
    Method.PREVIEW: (PreviewReply, False),
    Method.MIGRATE_LEGACY: (MigrateLegacyReply, False),
    Method.PAUSE: (PauseReply, False),
    Method.RESUME: (PauseReply, False),
    Method.TAGS: (TagCountReply, True),
    Method.IMPORT_CSV: (CsvImportReply, False),
    Method.IMPORT_PROGRESS: (ImportProgressReply, False),
    Method.DRIFT: (DriftReply, False),
    Method.EXPORT: (StreamReply, False),
    Method.BACKUP: (StreamReply, False),
    Method.STREAM_NEXT: (StreamChunkReply, False),
    Method.REPORT: (ReportReply, False),
    Method.ENRICH: (EnrichReply, False),
    Method.ENRICH_PROGRESS: (EnrichReply, False),
    Method.PENDING: (PendingReply, True),
    Method.VALIDATE: (ValidateReply, False),
    Method.UNAPPLY: (UnapplyReply, False),
}


# ----- live events: a PUB socket beside the control socket -------------------------------------


class Topic(StrEnum):
    RUN = "run"  # data: a ScanReply, on every state change of a scan
    FILES = "files"  # data: FilesEvent, one per committed batch
    GAPS = "gaps"  # data: GapsEvent, when gaps open or close


class FileSample(TypedDict):
    root: str
    relpath: str
    kind: str  # new | revived | moved | updated | vanished | error
    blake3: str | None
    duplicate: bool


class FilesEvent(TypedDict):
    counts: dict[str, int]  # change kind -> files
    sample: list[FileSample]  # the first few of the batch


class EntityRenamed(TypedDict):
    type: str
    old: str
    new: str


class GapsEvent(TypedDict):
    completeness: Completeness
    changed: list[EntityGaps]  # at most 50
    renamed: list[EntityRenamed]  # entities that followed their files to a new folder


EventData = ScanReply | FilesEvent | GapsEvent  # by topic: run, files, gaps


class Event(TypedDict):
    """The envelope of every event: one JSON object in the frame after the topic frame."""

    v: int
    topic: str
    seq: int
    at: str  # ISO 8601 UTC, as every time on the wire
    data: EventData


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
    except RecursionError:
        raise ProtocolError(ErrorCode.INVALID, f"{what} is nested too deep") from None
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


def _value_problem(value: Any, *, path: bool, row_id: bool = False) -> str | None:
    """What makes a well-typed JSON value unusable, or None. Each of these reached a handler once
    and failed deep inside (an int SQLite cannot store, a string the file system cannot name)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_PARAMS_DEPTH:
            return f"nested deeper than {MAX_PARAMS_DEPTH} levels"
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return "a whole number outside the signed 64-bit range"
            if row_id and not INT32_MIN <= item <= INT32_MAX:
                return "an id outside the signed 32-bit range ids are stored in"
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return f"a number that is not finite ({item!r})"
        elif isinstance(item, str):
            problem = _text_problem(item, path=path)
            if problem:
                return problem
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for k, v in item.items():
                problem = _text_problem(k, path=False)
                if problem:
                    return problem
                stack.append((v, depth + 1))
    return None


def _text_problem(text: str, *, path: bool) -> str | None:
    if "\x00" in text:
        return "a NUL character in a string"
    try:
        # Paths carry undecodable bytes as \udc80-\udcff (surrogateescape); any other lone
        # surrogate stands for no bytes at all. Text has no room for either.
        text.encode("utf-8", "surrogateescape" if path else "strict")
    except UnicodeEncodeError:
        if path:
            return "a lone surrogate (\\ud800-\\udfff) that is not an escaped byte"
        return "a lone surrogate (\\ud800-\\udfff): not text"
    return None


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
        problem = _value_problem(value, path=name in PATH_PARAMS, row_id=name in ID_PARAMS)
        if problem:
            message = f"{method}: parameter {name!r} holds {problem}"
            raise ProtocolError(ErrorCode.INVALID, message, request_id)


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
    try:
        if SYSTEM_SOCKET.exists():
            return SYSTEM_SOCKET
    except PermissionError:
        return SYSTEM_SOCKET  # there, in a folder this user may not enter: the client says so
    return _runtime_dir() / "control.sock"


def events_path_for(socket_path: Path) -> Path:
    """The PUB socket of live events sits beside the control socket."""
    return socket_path.with_name("events.sock")


def endpoint_for(socket_path: Path) -> str:
    return f"ipc://{socket_path}"
