"""`importctl migrate-legacy`, its backlog (`pause`/`resume migration`, `status`) and tags, with
the real daemon, real importctl and a legacy SQLite catalog built here."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, blake3_of, wait_for
from tests.integration.test_entities import EXPECT, character

MAPPING = """
[files]
table = "models"
id = "id"
path = "path"
root = "studio"
hash = "hash"
hash_algorithm = "blake3"
name = "name"
[files.attributes]
rating = "rating"
age = "age"
[tags]
table = "tags"
id = "id"
name = "name"
color = "color"
[tags.links]
table = "model_tags"
file = "model_id"
tag = "tag_id"
"""


def legacy_db(path: Path, rows: list[tuple[Any, ...]], links: list[tuple[int, int]]) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE models (id INTEGER PRIMARY KEY, path TEXT, hash TEXT, name TEXT,"
        " rating INTEGER, age INTEGER);"
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT, color TEXT);"
        "CREATE TABLE model_tags (model_id INTEGER, tag_id INTEGER);"
    )
    conn.executemany("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO tags VALUES (?, ?, ?)", [(1, "Favourite", "#ff0000"), (2, "outdoor", None)])
    conn.executemany("INSERT INTO model_tags VALUES (?, ?)", links)
    conn.commit()
    conn.close()


def setup(make_daemon: Any, tmp_path: Path) -> tuple[Daemon, Path, Path, Path, Path]:
    studio, late = tmp_path / "studio", tmp_path / "late"
    studio.mkdir()
    late.mkdir()
    character(studio, "Ada", age=None, scenes=("intro", "dance"))
    (studio / "loose.bin").write_bytes(b"loose file")
    (studio / "changed.bin").write_bytes(b"changed since the old catalog")
    d = make_daemon({"studio": studio, "late": late}, extra=EXPECT)
    d.write_config(
        f'\n[[roots]]\nname = "studio"\npath = "{studio}"\nrules = "characters"\n'
        f'\n[[roots]]\nname = "late"\npath = "{late}"\nwatch = "poll"\npoll_interval_seconds = 3600\n'
    )
    d.start()
    d.wait_idle()
    # Files the catalog has not seen yet: a polled root between polls.
    for i in range(6):
        (late / f"new{i}.bin").write_bytes(os.urandom(3000 + i))
    source = (studio / "Ada" / "source.jpg").read_bytes()
    rows = [
        (1, str(studio / "Ada" / "source.jpg"), blake3_of(source).upper(), "Ada's portrait", 5, 33),
        (2, "loose.bin", None, "Loose", 2, None),
        (3, "changed.bin", "ab" * 32, "Changed", 1, None),
        (4, "gone.bin", None, "Gone", 3, None),
        (5, str(tmp_path / "elsewhere" / "x.bin"), None, "Outside", 1, None),
        (6, None, None, "No path", 1, None),
        (7, "loose.bin", "not-a-hash", "Bad hash", 1, None),
    ]
    for i in range(6):
        data = (late / f"new{i}.bin").read_bytes()
        digest = blake3_of(data) if i != 5 else "cd" * 32  # the last one's old hash is stale
        rows.append((10 + i, str(late / f"new{i}.bin"), digest, f"New {i}", i, None))
    legacy_db(tmp_path / "old.db", rows, [(1, 1), (1, 2), (2, 2), (10, 1)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return d, studio, late, tmp_path / "old.db", mapping


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def actions(reply: dict[str, Any]) -> dict[str, str]:
    return {r["key"]: r["action"] for r in reply["rows"]}


def test_preview_then_commit_links_backlogs_and_reports(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, studio, late, db, mapping = setup(make_daemon, tmp_path)
    before = fingerprint(db)
    catalog_before = d.rows()
    preview = d.ctl("migrate-legacy", str(db), "--mapping", str(mapping), "--json")
    assert preview.returncode == 1, "invalid rows: exit 1"
    p = json.loads(preview.stdout)
    assert p["run_id"] is None and p["committed"] is False and p["more"] == 0
    assert p["totals"] == {
        "rows": 13, "link": 2, "backlog": 6, "stale": 1, "missing": 1, "outside": 1, "invalid": 2,
    }  # fmt: skip
    assert actions(p)["1"] == "link" and actions(p)["3"] == "stale" and actions(p)["4"] == "missing"
    assert actions(p)["5"] == "outside" and actions(p)["6"] == actions(p)["7"] == "invalid"
    assert [actions(p)[str(10 + i)] for i in range(6)] == ["backlog"] * 6
    invalid = {r["key"]: r["errors"][0]["column"] for r in p["rows"] if r["action"] == "invalid"}
    assert invalid == {"6": "path", "7": "hash"}
    assert next(r for r in p["rows"] if r["key"] == "1")["tags"] == ["Favourite", "outdoor"]
    # A preview writes nothing.
    assert d.rows() == catalog_before and d.ctl_json("tags") == []
    assert d.ctl_json("status")["migration"]["pending"] == 0

    d.ctl("pause", "migration", check=True)
    res = d.ctl("migrate-legacy", str(db), "--mapping", str(mapping), "--commit", "--json")
    assert res.returncode == 1
    c = json.loads(res.stdout)
    assert c["committed"] is True and c["run_id"] and c["totals"] == p["totals"]
    # Linked at once: values, tags, the attribute merged into the entity (its gap closes).
    info = d.ctl_json("info", str(studio / "Ada" / "source.jpg"))
    assert info["attributes"]["name"]["value"] == "Ada's portrait"
    assert info["attributes"]["rating"]["value"] == 5 and info["attributes"]["rating"]["source"] == "legacy"
    assert info["file"]["tags"] == [
        {"name": "Favourite", "color": "#ff0000"},
        {"name": "outdoor", "color": None},
    ]
    (found,) = d.ctl_json("find", str(studio / "loose.bin"))
    assert found["tags"] == [{"name": "outdoor", "color": None}]
    ada = d.ctl_json("entity", "character:Ada")
    assert ada["attributes"]["age"]["value"] == 33 and ada["attributes"]["age"]["source"] == "legacy"
    assert d.ctl_json("gaps", "--recompute") == d.ctl_json("gaps")
    # Stale: the file's real hash wins, the old value is reported in the run's log.
    (changed,) = d.ctl_json("find", str(studio / "changed.bin"))
    assert changed["blake3"] == blake3_of(b"changed since the old catalog")
    log = d.ctl_json("run", str(c["run_id"]))
    assert log["kind"] == "legacy"
    lines = {(e["action"], (e["detail"] or "").split(":")[0]) for e in log["log"]}
    assert {("stale", "row 3"), ("missing", "row 4"), ("outside", "row 5"), ("invalid", "row 6")} <= lines

    # Paused: nothing hashed; a restart keeps it paused, with its rows pending.
    mig = d.ctl_json("status")["migration"]
    assert (mig["state"], mig["pending"], mig["missing"]) == ("paused", 6, 1)
    assert d.ctl("find", str(late / "new0.bin")).returncode == 1, "not catalogued while paused"
    d.stop()
    d.start()
    mig = d.ctl_json("status")["migration"]
    assert (mig["state"], mig["pending"]) == ("paused", 6)
    text = d.ctl("status").stdout.decode()
    assert "migration: paused, 6 pending" in text
    d.ctl("resume", "migration", check=True)
    mig = wait_for(
        lambda: (m := d.ctl_json("status")["migration"])["state"] == "done" and m, timeout=60, what="backlog"
    )
    assert mig["pending"] + mig["done"] + mig["missing"] + mig["failed"] == 7
    assert (mig["done"], mig["missing"], mig["failed"]) == (6, 1, 0)
    (new0,) = d.ctl_json("find", str(late / "new0.bin"))
    assert new0["blake3"] == blake3_of((late / "new0.bin").read_bytes())
    assert new0["tags"] == [{"name": "Favourite", "color": "#ff0000"}]
    assert d.ctl_json("info", str(late / "new3.bin"))["attributes"]["rating"]["value"] == 3
    log = d.ctl_json("run", str(c["run_id"]))
    assert any(e["action"] == "stale" and e["detail"].startswith("row 15") for e in log["log"])
    tags = {t["name"]: t for t in d.ctl_json("tags")}
    assert tags["Favourite"] == {"name": "Favourite", "color": "#ff0000", "files": 2, "entities": 0}
    assert tags["outdoor"]["files"] == 2
    assert "Favourite (#ff0000): 2 files" in d.ctl("tags").stdout.decode()
    d.wait_idle()
    assert d.ctl_json("gaps", "--recompute") == d.ctl_json("gaps")
    # The old catalog is untouched, and nothing was created beside it.
    assert fingerprint(db) == before
    assert sorted(p.name for p in db.parent.glob("old.db*")) == ["old.db"]


def test_mapping_errors_are_one_line_with_a_hint(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    d.start()
    db = tmp_path / "old.db"
    legacy_db(db, [], [])
    bad = tmp_path / "bad.toml"
    bad.write_text(MAPPING.replace('rating = "rating"', 'rating = "stars"'), encoding="utf-8")
    res = d.ctl("migrate-legacy", str(db), "--mapping", str(bad))
    err = res.stderr.decode().strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1
    assert "no column 'stars' in table 'models'" in err and "hint: its columns:" in err
    bad.write_text(MAPPING.replace('table = "models"', 'table = "items"'), encoding="utf-8")
    err = d.ctl("migrate-legacy", str(db), "--mapping", str(bad)).stderr.decode()
    assert "no table 'items'" in err and "its tables: model_tags, models, tags" in err
    err = d.ctl("migrate-legacy", str(tmp_path / "none.db"), "--mapping", str(bad)).stderr.decode()
    assert "not_found" in err and "no legacy catalog" in err
    assert d.ctl("pause", "everything").returncode == 2


def test_the_backlog_survives_a_crash_midway_and_its_counts_add_up(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    late = tmp_path / "late"
    late.mkdir()
    d = make_daemon({"late": late})
    d.write_config(
        f'\n[[roots]]\nname = "late"\npath = "{late}"\nwatch = "poll"\npoll_interval_seconds = 3600\n'
    )
    d.start()
    d.wait_idle()
    files = 600
    for i in range(files):
        (late / f"d{i // 100}").mkdir(exist_ok=True)
        (late / f"d{i // 100}" / f"f{i}.bin").write_bytes(os.urandom(64 << 10))
    db = tmp_path / "old.db"
    legacy_db(
        db,
        [(i + 1, str(late / f"d{i // 100}" / f"f{i}.bin"), None, f"F{i}", i, None) for i in range(files)],
        [],
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING.replace('root = "studio"\n', ""), encoding="utf-8")
    client = d.client()
    client.pause("migration")
    reply = client.migrate_legacy(str(db), str(mapping), commit=True, limit=0)
    assert reply["totals"]["backlog"] == files and reply["rows"] == [] and reply["more"] == files
    client.resume("migration")
    wait_for(lambda: client.status()["migration"]["done"] > 0, timeout=60, interval=0.01, what="progress")
    d.kill()  # kill -9, midway or after
    d.start()

    def counted() -> Any:
        mig = d.client().status()["migration"]
        return mig["pending"] + mig["done"] + mig["missing"] + mig["failed"] == files and mig

    # The socket answers while the daemon still starts: the counts come once it has read them.
    mig = wait_for(counted, timeout=30, what="the backlog's counts")
    assert mig["done"] > 0 and mig["state"] in ("running", "done")
    mig = wait_for(
        lambda: (m := d.client().status()["migration"])["state"] == "done" and m, timeout=120, what="backlog"
    )
    assert (mig["pending"], mig["done"], mig["missing"], mig["failed"]) == (0, files, 0, 0)
    # Each row linked once: one value per file, no row in the old catalog twice.
    names = d.sql("SELECT count(*), count(DISTINCT file_id) FROM file_attributes WHERE name = 'name'")
    assert names[0] == (files, files)
    assert d.sql("SELECT count(*) FROM files WHERE status = 'present'")[0] == (files,)
