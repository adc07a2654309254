"""Catalog tables.

A `files` row is one path under one root; a `contents` row is one distinct BLAKE3 digest. Paths
are stored as the raw bytes the kernel gave us (`relpath`), so names that are not UTF-8 or that
hold newlines round-trip exactly; `display_path` is a lossless text spelling for display and
search. Rows are never deleted automatically: a file that disappears becomes `missing`.

Only one live (present or error) row may exist per path (a partial unique index); any number of
`missing` or `forgotten` rows may share it, which keeps history when a path is reused.

`forgotten`: a missing row the operator settled (`importctl forget`). It is never deleted and
never comes back by itself: it leaves checks, gaps and status counts, stays in `find --all`, and
a file that appears at its path later is a new row (`importctl forget --undo` makes it missing
again).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, event, text
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

STATUS_PRESENT = "present"
STATUS_MISSING = "missing"
STATUS_ERROR = "error"
STATUS_FORGOTTEN = "forgotten"
LIVE_STATUSES = (STATUS_PRESENT, STATUS_ERROR)
GONE_STATUSES = (STATUS_MISSING, STATUS_FORGOTTEN)
# Where an attribute's value came from (`attribute_sources.kind`).
ATTRIBUTE_SOURCE_KINDS = (
    "folder_rule", "metadata", "sidecar", "nfo", "table", "csv", "legacy", "provider", "resolved", "merge",
)  # fmt: skip
# Spelled exactly so in the statements that look live rows up by path: SQLite uses a partial
# index only for a query whose WHERE holds the index's own condition, term for term.
LIVE_PATH_WHERE = "status NOT IN ('missing', 'forgotten')"
# The same for a path's gone rows (its history): `find` by path reads them apart.
GONE_PATH_WHERE = "status IN ('missing', 'forgotten')"


class RootRow(SQLModel, table=True):
    """A root of one server: several servers sharing a catalog may each have a root called
    `media`, so a root is its host and its name (`host` is the config's `host`, the machine's
    name by default)."""

    __tablename__ = "roots"
    __table_args__ = (Index("uq_roots_host_name", "host", "name", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    path: str
    # The end of the last complete reconcile: every present file under the root was seen then,
    # so a file's effective last_seen is max(files.last_seen, this).
    last_reconciled: float | None = None
    host: str = Field(default="", max_length=255, sa_column_kwargs={"server_default": ""})


class ContentRow(SQLModel, table=True):
    __tablename__ = "contents"

    blake3: str = Field(primary_key=True, max_length=64)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_seen: float


class FileRow(SQLModel, table=True):
    __tablename__ = "files"
    __table_args__ = (
        Index(
            "uq_files_live_path",
            "root_id",
            "relpath",
            unique=True,
            sqlite_where=text(LIVE_PATH_WHERE),
        ),
        Index(
            "ix_files_gone_path",
            "root_id",
            "relpath",
            sqlite_where=text(GONE_PATH_WHERE),
        ),
        Index("ix_files_inode", "dev", "inode"),
        Index("ix_files_blake3", "blake3"),
        Index("ix_files_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    root_id: int = Field(foreign_key="roots.id", index=True)
    relpath: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    display_path: str
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    inode: int = Field(sa_column=Column(BigInteger, nullable=False))
    dev: int = Field(sa_column=Column(BigInteger, nullable=False))
    blake3: str | None = Field(default=None, foreign_key="contents.blake3", max_length=64)
    status: str = Field(max_length=16)
    first_seen: float
    last_seen: float
    missing_since: float | None = None
    error: str | None = None
    hashed_at: float | None = None
    last_verified: float | None = None


class RunRow(SQLModel, table=True):
    """One reconcile (later: import run, sweep) with its counts."""

    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    trigger: str = Field(max_length=32)
    root_id: int | None = Field(default=None, foreign_key="roots.id")
    target: str | None = None
    status: str = Field(max_length=16)
    started: float
    finished: float | None = None
    files_seen: int = 0
    changed: int = 0
    vanished: int = 0
    errors: int = 0
    detail: str | None = None
    # Added by a migration to a table with rows: the default is the database's too.
    entities_created: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    entities_updated: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    files_registered: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    duplicates: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The gap report (JSON) when the run finished, to compare progress over time.
    gap_report: str | None = None
    # The server whose daemon ran it: a daemon that starts abandons only its own running runs.
    host: str | None = Field(default=None, max_length=255)


class HostRow(SQLModel, table=True):
    """A server whose daemon uses this catalog, with its heartbeat: how `status --site` tells a
    live daemon from a stopped or silent one."""

    __tablename__ = "hosts"

    name: str = Field(primary_key=True, max_length=255)
    version: str
    pid: int
    started: float
    heartbeat: float
    # Seconds between heartbeats, so a reader knows when one is late.
    interval: float
    # Set by a clean stop; a daemon that died leaves it empty and its heartbeat ages.
    stopped: float | None = None


class EntityRow(SQLModel, table=True):
    """A character, a film, a series…: what an operator thinks in. Matched by (type, key), where
    the key is the rule set's match key (a folded name, a path or an id); `name` keeps the tree's
    spelling. Attributes come from metadata files and sidecars, as JSON. An entity merged into
    another (`importctl resolve --merge`) keeps its row with `merged_into` set, and its key moves
    aside (`merged<id>:<key>`) so a folder of that name found later is a new entity."""

    __tablename__ = "entities"
    __table_args__ = (Index("uq_entities_type_key", "type", "key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    type: str = Field(max_length=64)
    key: str
    name: str
    attributes: str = "{}"
    first_seen: float
    updated: float
    merged_into: int | None = Field(default=None, foreign_key="entities.id")


class EntityFileRow(SQLModel, table=True):
    """How a file was mapped: to an entity with a role, or to nothing (entity_id NULL: the file
    matched no rule and shows in `importctl unmatched`)."""

    __tablename__ = "entity_files"

    file_id: int = Field(primary_key=True, foreign_key="files.id")
    entity_id: int | None = Field(default=None, foreign_key="entities.id", index=True)
    root_id: int = Field(foreign_key="roots.id", index=True)
    rule_index: int | None = None
    role: str | None = Field(default=None, max_length=64)
    link_attributes: str = "{}"
    pre_approved: bool = False
    mapped_at: float


class ConflictRow(SQLModel, table=True):
    """What is never applied silently. kind `attribute`: a metadata value that differs from the
    one the entity holds; `importctl resolve` keeps it or takes the new one. kind `merge`: every
    file of the entity moved into another entity's folder (`other_entity_id`); `resolve` merges
    the two or keeps them apart."""

    __tablename__ = "conflicts"

    id: int | None = Field(default=None, primary_key=True)
    entity_id: int = Field(foreign_key="entities.id", index=True)
    attribute: str
    current: str
    proposed: str
    source: str
    status: str = Field(default="open", max_length=16)  # open | kept | taken | merged | kept_apart
    created: float
    resolved: float | None = None
    kind: str = Field(default="attribute", max_length=16, sa_column_kwargs={"server_default": "attribute"})
    other_entity_id: int | None = Field(default=None, foreign_key="entities.id")


class RunLogRow(SQLModel, table=True):
    """Per-entity log of a run: created, updated, skipped, failed, duplicate."""

    __tablename__ = "run_log"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", index=True)
    entity_id: int | None = Field(default=None, foreign_key="entities.id")
    entity: str | None = None
    action: str = Field(max_length=16)
    detail: str | None = None
    at: float


class ExtractionRow(SQLModel, table=True):
    """One extractor's result for one content (facts as JSON, or the failure's reason), keyed by
    content hash: the same content at two paths is analysed once. A newer extractor version
    replaces the row."""

    __tablename__ = "extractions"

    blake3: str = Field(primary_key=True, foreign_key="contents.blake3", max_length=64)
    extractor: str = Field(primary_key=True, max_length=32)
    version: int
    status: str = Field(max_length=16)  # ok | failed
    facts: str | None = None
    error: str | None = None
    at: float
    cpu_s: float | None = None


class ImageHashRow(SQLModel, table=True):
    """Perceptual hashes as signed 64-bit integers (the same bits as the unsigned hash), so the
    Hamming distance is a popcount of the XOR."""

    __tablename__ = "image_hashes"

    blake3: str = Field(primary_key=True, foreign_key="contents.blake3", max_length=64)
    phash: int = Field(sa_column=Column(BigInteger, nullable=False))
    dhash: int = Field(sa_column=Column(BigInteger, nullable=False))
    low_detail: bool = False


class VideoFingerprintRow(SQLModel, table=True):
    __tablename__ = "video_fingerprints"

    blake3: str = Field(primary_key=True, foreign_key="contents.blake3", max_length=64)
    duration_s: float
    frames: str  # JSON: [signed 64-bit pHash | null, ...]
    blank: str  # JSON: [bool, ...]


class FaceRow(SQLModel, table=True):
    __tablename__ = "faces"

    id: int | None = Field(default=None, primary_key=True)
    blake3: str = Field(foreign_key="contents.blake3", max_length=64, index=True)
    idx: int
    x1: float
    y1: float
    x2: float
    y2: float
    det_score: float
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # 512 float32, unit length


class FileMoveRow(SQLModel, table=True):
    """Where a file row lived before a move: move detection updates the row in place, so this
    history is what lets a broken symlink find the file that moved away from its target."""

    __tablename__ = "file_moves"
    __table_args__ = (Index("ix_file_moves_old", "old_root_id", "old_relpath"),)

    id: int | None = Field(default=None, primary_key=True)
    file_id: int = Field(foreign_key="files.id", index=True)
    old_root_id: int = Field(foreign_key="roots.id")
    old_relpath: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    at: float


class SymlinkRow(SQLModel, table=True):
    """Every symlink the walk met, as written and as resolved, with its state."""

    __tablename__ = "symlinks"
    __table_args__ = (Index("uq_symlinks_path", "root_id", "relpath", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    root_id: int = Field(foreign_key="roots.id")
    relpath: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    target: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    resolved: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    state: str = Field(max_length=16)  # ok | broken | loop | outside-roots | gone
    last_seen: float


class FindingRow(SQLModel, table=True):
    """What an integrity sweep found, stored with its run."""

    __tablename__ = "findings"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    kind: str = Field(max_length=16)
    path: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    detail: str = ""
    # A ghost that is a row marked missing: when it was marked (its fix is restore or forget).
    missing_since: float | None = None


class VanishHoldRow(SQLModel, table=True):
    """A live row that a mass disappearance would have marked missing, held until the operator
    confirms (`importctl confirm-missing`) or the file comes back. The row itself stays as it
    was (`present`), so `find`, gaps and status counts do not change while it is held; `since`
    is when it vanished, the `missing_since` a confirmation gives it."""

    __tablename__ = "vanish_holds"

    file_id: int = Field(foreign_key="files.id", primary_key=True)
    root_id: int = Field(foreign_key="roots.id", index=True)
    since: float


class AttributeSourceRow(SQLModel, table=True):
    """Where an entity's attribute value came from and when: the folder rule, a metadata.json,
    a sidecar, an NFO file, a CSV import, a legacy catalog, a provider, or a settled conflict.
    One row per attribute: the source of the value the entity holds now."""

    __tablename__ = "attribute_sources"

    entity_id: int = Field(foreign_key="entities.id", primary_key=True)
    attribute: str = Field(primary_key=True)
    kind: str = Field(max_length=16)  # ATTRIBUTE_SOURCE_KINDS
    source: str  # a path, a file name, "run 12"…
    run_id: int | None = Field(default=None, foreign_key="runs.id")
    at: float


class TagRow(SQLModel, table=True):
    """A tag, as old catalogs and NFO files carry them; matched by its folded name."""

    __tablename__ = "tags"
    __table_args__ = (Index("uq_tags_key", "key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    key: str
    name: str
    color: str | None = None
    created: float


class FileTagRow(SQLModel, table=True):
    __tablename__ = "file_tags"

    file_id: int = Field(foreign_key="files.id", primary_key=True)
    tag_id: int = Field(foreign_key="tags.id", primary_key=True, index=True)
    source: str
    at: float


class EntityTagRow(SQLModel, table=True):
    __tablename__ = "entity_tags"

    entity_id: int = Field(foreign_key="entities.id", primary_key=True)
    tag_id: int = Field(foreign_key="tags.id", primary_key=True, index=True)
    source: str
    at: float


class LegacyBacklogRow(SQLModel, table=True):
    """A legacy catalog's row whose file was on disk but not catalogued when the migration was
    committed: hashed in the background (`pipeline/backlog.py`), then linked. `record` keeps
    what the old row said (name, attributes, tags, its hash) as JSON until then; `state` is
    pending | done | missing | failed, and a row is never deleted."""

    __tablename__ = "legacy_backlog"
    __table_args__ = (Index("ix_legacy_backlog_state", "state", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    root_id: int = Field(foreign_key="roots.id")
    relpath: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    legacy_id: str
    record: str = "{}"
    state: str = Field(default="pending", max_length=16)
    error: str | None = None
    added: float
    settled: float | None = None


class BacklogControlRow(SQLModel, table=True):
    """Whether a background backlog is paused (`importctl pause migration`): kept in the catalog
    so a restart resumes it as it was."""

    __tablename__ = "backlog_control"

    name: str = Field(primary_key=True, max_length=32)
    paused: bool = False
    updated: float


class FileAttributeRow(SQLModel, table=True):
    """A value an old catalog held about one file (its name, a rating…): kept per file, shown by
    `importctl info`; also merged into the file's entity when it has one."""

    __tablename__ = "file_attributes"

    file_id: int = Field(foreign_key="files.id", primary_key=True)
    name: str = Field(primary_key=True)
    value: str  # JSON
    kind: str = Field(max_length=16)  # ATTRIBUTE_SOURCE_KINDS
    source: str
    run_id: int | None = Field(default=None, foreign_key="runs.id")
    at: float


class EnrichmentRow(SQLModel, table=True):
    """Where an entity stands with the metadata provider (`importd.enrich`): `state` matched |
    pending | none | skipped | unapplied; `fingerprint` is the query it asked with (an entity whose
    query is unchanged is not asked again); `candidates` (JSON) what a pending one chooses among."""

    __tablename__ = "enrichments"

    entity_id: int = Field(foreign_key="entities.id", primary_key=True)
    state: str = Field(max_length=16)
    provider: str = Field(max_length=16)
    kind: str = Field(max_length=8)
    provider_id: int | None = None
    confidence: float | None = None
    candidates: str = "[]"
    reason: str | None = None
    fingerprint: str = Field(max_length=64)
    attempts: int = 0
    run_id: int | None = Field(default=None, foreign_key="runs.id")
    at: float


class EnrichAppliedRow(SQLModel, table=True):
    """One attribute value a match applied, with what the entity held before (JSON; NULL: no
    value) and where that came from, so `importctl unapply` restores exactly that."""

    __tablename__ = "enrich_applied"

    id: int | None = Field(default=None, primary_key=True)
    entity_id: int = Field(foreign_key="entities.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", index=True)
    provider: str = Field(max_length=16)
    provider_id: int
    attribute: str
    before: str | None = None
    before_source: str | None = None  # JSON {kind, source, run_id, at}, NULL: none
    after: str
    at: float
    undone: float | None = None


class FileCountRow(SQLModel, table=True):
    """Files and bytes per root and status, kept by triggers on `files` in the same transaction as
    every change to them: `importctl status` reads a few rows here instead of counting a million
    (0.3-2 s at a million files while the daemon hashes). Derived: not in an export, rebuilt by
    the triggers as a dump's files are loaded."""

    __tablename__ = "file_counts"
    __table_args__ = {"info": {"derived": True}}

    root_id: int = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)
    files: int = Field(sa_column=Column(BigInteger, nullable=False))
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))


# The triggers that keep `file_counts` (SQLite's spelling; migration 0012 has PostgreSQL's). An
# update fires only when a counted column changes: most writes touch last_seen and the like.
_COUNT_ADD = """INSERT INTO file_counts (root_id, status, files, bytes)
    VALUES (NEW.root_id, NEW.status, 1, NEW.size)
    ON CONFLICT (root_id, status) DO UPDATE SET files = files + 1, bytes = bytes + excluded.bytes;"""
_COUNT_SUB = """UPDATE file_counts SET files = files - 1, bytes = bytes - OLD.size
    WHERE root_id = OLD.root_id AND status = OLD.status;"""
FILE_COUNT_TRIGGERS_SQLITE = (
    f"CREATE TRIGGER file_counts_insert AFTER INSERT ON files BEGIN {_COUNT_ADD} END",
    f"CREATE TRIGGER file_counts_delete AFTER DELETE ON files BEGIN {_COUNT_SUB} END",
    "CREATE TRIGGER file_counts_update AFTER UPDATE OF root_id, status, size ON files"
    " WHEN OLD.root_id IS NOT NEW.root_id OR OLD.status IS NOT NEW.status OR OLD.size IS NOT NEW.size"
    f" BEGIN {_COUNT_SUB} {_COUNT_ADD} END",
)


def _create_count_triggers(target: object, connection: Connection, **kw: object) -> None:
    """A new SQLite catalog is made from the models (`create_all`): the triggers come with it."""
    if connection.dialect.name != "sqlite":
        return
    present = {
        name
        for (name,) in connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    for statement in FILE_COUNT_TRIGGERS_SQLITE:
        if statement.split()[2] not in present:  # create_all again on a catalog that has them
            connection.exec_driver_sql(statement)


# On the metadata, not the table: `files` must exist first, and nothing orders the two tables.
event.listen(SQLModel.metadata, "after_create", _create_count_triggers)


def add_postgresql_options() -> None:
    """Give the partial index its PostgreSQL spelling too. Not in the declaration: naming a
    dialect's option there makes SQLAlchemy import that dialect (and its drivers' modules), 0.1 s
    of every start-up on the SQLite default. Called when a PostgreSQL engine is made."""
    index = next(i for i in SQLModel.metadata.tables["files"].indexes if i.name == "uq_files_live_path")
    index.dialect_kwargs["postgresql_where"] = text(LIVE_PATH_WHERE)
