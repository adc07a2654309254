"""The entities stage against a real SQLite catalog: after any sequence of file events (forget
and its undo included), the live gap report equals a full recomputation from the catalog
(hypothesis drives the sequences)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from importd.catalog import files as catalog_files
from importd.catalog import models  # noqa: F401
from importd.catalog.entities import MappedFile, apply_mapping, load_states
from importd.catalog.roots import ensure_roots
from importd.catalog.writer import FileChange, apply_ops
from importd.entities import (
    Expectations,
    LiveGapReport,
    RuleSet,
    compute_report,
    load_rule_set,
    parse_expectations,
)
from importd.items import FileRef, FileStat, HashedFile, MovedFile, Vanished
from importd.paths import wire

RULES = load_rule_set("characters")
EXPECT = parse_expectations(
    {"character": {"attributes": ["age"], "roles": ["source_image"], "scenes": ["intro", "dance"]}}
)
NAMES = ["Alice", "alice", "Élodie", "Zoé"]
FILES = ["intro.mp4", "dance.mp4", "source.jpg", "metadata.json", "old/x.mp4"]

event = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.sampled_from(FILES), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.sampled_from(FILES), st.just(0)),
    st.tuples(st.just("move"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.just(0)),
    st.tuples(
        st.sampled_from(["forget", "undo"]), st.sampled_from(NAMES), st.sampled_from(FILES), st.just(0)
    ),
)


class Model:
    """A tiny in-memory tree driving real writer and mapper transactions."""

    def __init__(self, conn: Connection, rules: RuleSet = RULES, expect: Expectations = EXPECT) -> None:
        self.conn = conn
        self.rules = rules
        self.expect = expect
        self.files: dict[bytes, tuple[int, bytes]] = {}  # relpath -> (inode, content)
        self.inode = 100
        self.now = 1000.0
        self.live = LiveGapReport(expect)

    def _commit(self, ops: list[HashedFile | MovedFile | Vanished], contents: dict[bytes, bytes]) -> None:
        self.now += 1
        result = apply_ops(self.conn, ops, self.now)
        items = []
        for change in result.changes:
            mapping = (
                None if change.kind in ("vanished", "error") else self.rules.map_path(wire(change.relpath))
            )
            data = contents.get(change.relpath) if mapping and mapping.role == "metadata" else None
            items.append(MappedFile(change, mapping, data, None))
        outcome = apply_mapping(self.conn, items, self.now, {})
        for ev in outcome.events:
            self.live.apply(ev)

    def write(self, name: str, fname: str, variant: int) -> None:
        rel = f"{name}/{fname}".encode()
        content = json.dumps({"age": 20 + variant}).encode() if fname == "metadata.json" else b"v%d" % variant
        self.inode += 1
        self.files[rel] = (self.inode, content)
        digest = f"{abs(hash(content)):064x}"
        op = HashedFile(FileRef(1, "r", rel), FileStat(len(content), self.inode, 0, self.inode, 1), digest)
        self._commit([op], {rel: content})

    def delete(self, name: str, fname: str) -> None:
        rel = f"{name}/{fname}".encode()
        if rel in self.files:
            del self.files[rel]
            self._commit([Vanished(FileRef(1, "r", rel))], {})

    def move(self, src: str, dst: str) -> None:
        if src == dst:
            return
        ops: list[HashedFile | MovedFile | Vanished] = []
        contents = {}
        for rel in [r for r in self.files if r.startswith(src.encode() + b"/")]:
            new = dst.encode() + rel[len(src) :]
            if new in self.files:
                continue
            inode, content = self.files.pop(rel)
            self.files[new] = (inode, content)
            ops.append(Vanished(FileRef(1, "r", rel)))
            ops.append(
                HashedFile(
                    FileRef(1, "r", new),
                    FileStat(len(content), inode, 0, inode, 1),
                    f"{abs(hash(content)):064x}",
                )
            )
            contents[new] = content
        if ops:
            self._commit(ops, contents)

    def forget(self, name: str, fname: str, undo: bool) -> None:
        """`importctl forget [--undo]` as core does it: the rows change in one transaction, then
        the mapper hears of them."""
        rel = f"{name}/{fname}".encode()
        rows = catalog_files.forget(self.conn, 1, rel, undo=undo, dry_run=False)
        kind = "unforgotten" if undo else "forgotten"
        self.now += 1
        items = [MappedFile(FileChange(r.row_id, 1, r.relpath, kind), None) for r in rows]
        for ev in apply_mapping(self.conn, items, self.now, {}).events:
            self.live.apply(ev)

    def check(self) -> None:
        full = compute_report(load_states(self.conn), self.expect)
        assert self.live.report().to_json() == full.to_json()


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as c:
        ensure_roots(c, "h", [("r", "/srv/r")])
        yield c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event, max_size=25))
def test_live_report_equals_recomputation_after_every_event(
    conn: Connection, events: list[tuple[str, str, str, int]]
) -> None:
    with conn.begin_nested() as savepoint:
        model = Model(conn)
        for kind, a, b, n in events:
            if kind == "write":
                model.write(a, b, n)
            elif kind == "delete":
                model.delete(a, b)
            elif kind in ("forget", "undo"):
                model.forget(a, b, undo=kind == "undo")
            else:
                model.move(a, b)
            model.check()
        savepoint.rollback()


SERIES = load_rule_set("films-series")
EPISODES = parse_expectations({"series": {"episodes": "contiguous"}})
EPISODE_FILES = [f"Season 1/Voisins S01E{n:02d}.mkv" for n in (1, 3)]
episode_event = st.tuples(
    st.sampled_from(["write", "delete", "forget", "undo"]), st.sampled_from(EPISODE_FILES), st.integers(0, 1)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(episode_event, max_size=25))
@example(
    events=[("write", EPISODE_FILES[1], 0), ("delete", EPISODE_FILES[1], 0), ("forget", EPISODE_FILES[1], 0)]
)
def test_a_forgotten_episode_is_not_there_live_or_recomputed(
    conn: Connection, events: list[tuple[str, str, int]]
) -> None:
    """A missing episode still holds up the highest number; a forgotten one does not, in the live
    report as in the recomputation."""
    with conn.begin_nested() as savepoint:
        model = Model(conn, SERIES, EPISODES)
        for kind, fname, n in events:
            if kind == "write":
                model.write("Series/Voisins", fname, n)
            elif kind == "delete":
                model.delete("Series/Voisins", fname)
            else:
                model.forget("Series/Voisins", fname, undo=kind == "undo")
            model.check()
        savepoint.rollback()


def test_conflict_is_recorded_not_applied(conn: Connection) -> None:
    model = Model(conn)
    model.write("Alice", "metadata.json", 0)
    model.write("Alice", "metadata.json", 1)
    rows = list(conn.exec_driver_sql("SELECT attribute, current, proposed, status FROM conflicts"))
    assert rows == [("age", "20", "21", "open")]
    attrs = json.loads(conn.exec_driver_sql("SELECT attributes FROM entities").scalar_one())
    assert attrs == {"age": 20}
    model.check()
