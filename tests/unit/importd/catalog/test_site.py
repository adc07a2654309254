"""Several servers on one catalog, at the catalog's level: roots by host and name, adoption of
roots from before hosts, heartbeats, one server's view of the entities, and an entity another
server created meanwhile."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.engine import Connection

from importd.catalog.entities import MappedFile, apply_mapping, live_files_of_root, load_states
from importd.catalog.hosts import HostBeat, beat, host_rows, mark_stopped, others_exist
from importd.catalog.roots import ensure_roots, root_paths, site_roots
from importd.catalog.runs import abandon_running, start_run
from importd.catalog.tables import entities, roots, runs
from importd.catalog.writer import apply_ops
from importd.entities import load_rule_set
from importd.items import FileRef, FileStat, HashedFile
from importd.paths import wire

RULES = load_rule_set("characters")


def test_two_hosts_may_each_have_a_root_of_the_same_name(catalog: Connection) -> None:
    mine = ensure_roots(catalog, "h", [("r", "/srv/r")])
    theirs = ensure_roots(catalog, "beta", [("r", "/srv/r")])
    assert mine == {"r": 1} and theirs["r"] != 1
    assert set(root_paths(catalog, "h")) == {1} and set(root_paths(catalog, "beta")) == {theirs["r"]}
    assert {(r.host, r.name) for r in site_roots(catalog).values()} == {("h", "r"), ("beta", "r")}


def test_roots_and_runs_from_before_hosts_are_adopted_by_the_first_daemon(catalog: Connection) -> None:
    catalog.execute(roots.insert().values(name="old", path="/srv/old", host=""))
    catalog.execute(runs.insert().values(kind="reconcile", trigger="startup", status="running", started=1.0))
    ensure_roots(catalog, "alpha", [("new", "/srv/new")])
    assert {(r.host, r.name) for r in site_roots(catalog).values()} >= {("alpha", "old"), ("alpha", "new")}
    assert catalog.execute(select(runs.c.host)).scalars().all() == ["alpha"]


def test_a_start_abandons_only_its_own_hosts_running_runs(catalog: Connection) -> None:
    mine = start_run(catalog, "h", "reconcile", "startup", 1, None, 1.0)
    theirs = start_run(catalog, "beta", "reconcile", "startup", None, None, 1.0)
    assert abandon_running(catalog, "h", 2.0) == 1
    states = dict(catalog.execute(select(runs.c.id, runs.c.status)).all())
    assert states == {mine: "interrupted", theirs: "running"}


def test_heartbeats(catalog: Connection) -> None:
    assert not others_exist(catalog, "h")
    beat(catalog, HostBeat("h", "1.0", 10, 100.0, 100.0, 15.0, None))
    beat(catalog, HostBeat("beta", "1.0", 20, 90.0, 90.0, 15.0, None))
    beat(catalog, HostBeat("h", "1.0", 10, 100.0, 115.0, 15.0, None))
    assert others_exist(catalog, "h")
    mark_stopped(catalog, "beta", 120.0)
    assert [(b.name, b.heartbeat, b.stopped) for b in host_rows(catalog)] == [
        ("beta", 120.0, 120.0),
        ("h", 115.0, None),
    ]


def _register(conn: Connection, root_id: int, rels: list[bytes], first_inode: int) -> None:
    ops = [
        HashedFile(
            FileRef(root_id, "r", rel),
            FileStat(10, 1000, 1000, first_inode + i, 7),
            f"{first_inode + i:064x}",
        )
        for i, rel in enumerate(rels)
    ]
    apply_ops(conn, ops, 1.0)


def _map_root(conn: Connection, root_id: int, host: str, sidecars: dict[bytes, bytes]) -> None:
    items = [
        MappedFile(change, RULES.map_path(wire(change.relpath)), sidecars.get(change.relpath), None)
        for change in live_files_of_root(conn, root_id)
    ]
    apply_mapping(conn, items, 2.0, {root_id: None}, host=host)


def test_one_entity_for_both_hosts_and_each_hosts_view_of_it(catalog: Connection) -> None:
    beta = ensure_roots(catalog, "beta", [("r", "/srv/r")])["r"]
    _register(catalog, 1, [b"Alice/intro.mp4", b"Alice/metadata.json"], 1)
    _register(catalog, beta, [b"Alice/dance.mp4", b"Alice/dance.json", b"Carol/intro.mp4"], 100)
    _map_root(catalog, 1, "h", {b"Alice/metadata.json": b'{"age": 30}'})
    _map_root(catalog, beta, "beta", {b"Alice/dance.json": b'{"height": 170}'})
    rows = catalog.execute(select(entities.c.key, entities.c.attributes).order_by(entities.c.key)).all()
    assert [(k, json.loads(a)) for k, a in rows] == [
        ("name:alice", {"age": 30, "height": 170}),
        ("name:carol", {}),
    ]
    here = {s.key: sorted(s.links) for s in load_states(catalog, "h")}
    assert list(here) == ["name:alice"], "Carol has files on beta only"
    assert len(here["name:alice"]) == 2
    site = {s.key: len(s.links) for s in load_states(catalog)}
    assert site == {"name:alice": 4, "name:carol": 1}


def test_an_entity_another_server_created_meanwhile_is_taken_not_duplicated(catalog: Connection) -> None:
    """The batch looked for the key and found nothing; before it inserts, another server's
    daemon commits the same entity: the insert yields and the batch uses that row."""
    from importd.catalog import entities as catalog_entities

    _register(catalog, 1, [b"Dana/metadata.json"], 1)
    change = live_files_of_root(catalog, 1)[0]
    item = MappedFile(change, RULES.map_path(wire(change.relpath)), b'{"age": 41}', None)
    real_load = catalog_entities._Batch.load_entities
    calls = 0

    def load_then_race(self: catalog_entities._Batch, keys: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the per-item load, just before `ensure` inserts
            self.conn.execute(
                entities.insert().values(
                    type="character",
                    key="name:dana",
                    name="Dana",
                    attributes='{"height": 160}',
                    first_seen=1.0,
                    updated=1.0,
                )
            )
            return
        real_load(self, keys)  # type: ignore[arg-type]

    catalog_entities._Batch.load_entities = load_then_race  # type: ignore[method-assign]
    try:
        apply_mapping(catalog, [item], 2.0, {1: None}, host="h")
    finally:
        catalog_entities._Batch.load_entities = real_load  # type: ignore[method-assign]
    rows = catalog.execute(select(entities.c.key, entities.c.attributes)).all()
    assert [(k, json.loads(a)) for k, a in rows] == [("name:dana", {"height": 160, "age": 41})]
