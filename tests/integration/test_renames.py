"""Entities follow their folders: renames and moves keep the entity (same id, attributes,
history), a move onto another entity's name is proposed as a merge, and an entity whose files
are all gone is listed once as orphaned. The real daemon, importctl and trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import BIN, Daemon, wait_for
from tests.integration.test_entities import EXPECT, character, gaps, missing_of

# Deleting one character of a few is more than the brake's 20 %: these tests are about entities.
NO_BRAKE = EXPECT + "\n[safety]\nmax_vanish_percent = 100\n"


def studio(make_daemon: Any, tmp_path: Path, rules: str = "characters") -> tuple[Daemon, Path]:
    root = tmp_path / "studio"
    root.mkdir(exist_ok=True)
    d = make_daemon({"studio": root}, extra=NO_BRAKE)
    d.write_config(f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "{rules}"\n')
    return d, root


def entities(d: Daemon) -> dict[str, dict[str, Any]]:
    return {r["name"]: dict(r) for r in d.sql("SELECT * FROM entities")}


def run_log(d: Daemon, action: str) -> list[str]:
    return [r[0] for r in d.sql("SELECT detail FROM run_log WHERE action = ?", action)]


def under(d: Daemon, prefix: bytes) -> int:
    return sum(1 for r in d.rows("status='present'") if bytes(r["relpath"]).startswith(prefix))


def test_renaming_a_character_folder_renames_the_entity(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = studio(make_daemon, tmp_path)
    character(root, "Alice")
    character(root, "Bob", age=41)
    # Many scenes: a folder this size reaches the catalog in several walk batches.
    for i in range(1500):
        (root / "Bob" / f"take{i:04d}.mp4").write_bytes(b"%d" % i)
    d.start()
    d.wait_idle()
    before = entities(d)["Bob"]
    watcher = subprocess.Popen(
        [str(BIN / "importctl"), "--socket", str(d.socket), "watch", "--json", "--topic", "gaps"],
        stdout=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # PUB drops what nobody listens to yet
        (root / "Bob").rename(root / "Bobby")
        wait_for(lambda: under(d, b"Bobby/") == 1504, what="the folder's rows followed it", timeout=60)
        d.wait_idle()
        wait_for(lambda: "Bobby" in entities(d), what="the entity renamed")
    finally:
        time.sleep(0.5)
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    after = entities(d)
    assert set(after) == {"Alice", "Bobby"}, "no entity left behind, none made anew"
    assert after["Bobby"]["id"] == before["id"] and after["Bobby"]["key"] == "name:bobby"
    assert json.loads(after["Bobby"]["attributes"]) == {"age": 41}
    report = gaps(d)
    assert report["entities"] == [] and report["orphaned"] == [], "no false gap"
    assert report["completeness"]["percent"] == 100.0
    assert run_log(d, "renamed") == ["Bob → Bobby: its files moved to Bobby"]
    renames = [r for line in out.splitlines() for r in json.loads(line)["data"].get("renamed", [])]
    assert {"type": "character", "old": "Bob", "new": "Bobby"} in renames
    assert gaps(d, "--recompute") == report


def test_series_and_film_folders_moved_across_folders_keep_their_entities(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, lib = studio(make_daemon, tmp_path, rules="films-series")
    show = lib / "Séries" / "Les Voisins"
    for season, episodes in ((1, (1, 2, 3)), (2, (1, 2))):
        (show / f"Saison {season:02d}").mkdir(parents=True)
        for ep in episodes:
            (show / f"Saison {season:02d}" / f"Les Voisins S{season:02d}E{ep:02d}.mkv").write_bytes(
                os.urandom(64)
            )
    film = lib / "Films" / "Le Grand Voyage (1998)"
    film.mkdir(parents=True)
    (film / "Le Grand Voyage (1998).mkv").write_bytes(os.urandom(64))
    (film / "poster.jpg").write_bytes(os.urandom(64))
    d.start()
    d.wait_idle()
    ids = {name: e["id"] for name, e in entities(d).items()}
    assert set(ids) == {"Les Voisins", "Le Grand Voyage (1998)"}
    # A series with its season folders moved to another parent under another name...
    (lib / "TV Shows").mkdir()
    shutil.move(str(show), str(lib / "TV Shows" / "The Neighbours"))
    # ...and a film moved under Movies/ with its year corrected.
    (lib / "Movies").mkdir()
    shutil.move(str(film), str(lib / "Movies" / "Le Grand Voyage (1999)"))
    wait_for(lambda: under(d, b"TV Shows/The Neighbours/") == 5 and under(d, b"Movies/") == 2, what="moved")
    d.wait_idle()
    wait_for(lambda: "The Neighbours" in entities(d), what="the series renamed")
    after = entities(d)
    assert {name: e["id"] for name, e in after.items()} == {
        "The Neighbours": ids["Les Voisins"],
        "Le Grand Voyage (1999)": ids["Le Grand Voyage (1998)"],
    }
    assert json.loads(after["Le Grand Voyage (1999)"]["attributes"])["year"] in (1998, 1999)
    report = gaps(d)
    assert report["entities"] == [] and report["orphaned"] == []
    assert gaps(d, "--recompute") == report


def test_renaming_onto_an_existing_entity_proposes_a_merge(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = studio(make_daemon, tmp_path)
    # Alice is known from the characters table only; Bob has his folder.
    (root / "personnages.csv").write_text("name,age,notes\nAlice,40,from the table\n", encoding="utf-8")
    character(root, "Bob", age=None)
    d.start()
    d.wait_idle()
    assert missing_of(gaps(d), "Alice"), "Alice has no files yet"
    (root / "Bob").rename(root / "Alice")
    wait_for(lambda: under(d, b"Alice/") == 3, what="moved")
    d.wait_idle()
    (proposal,) = [c for c in d.ctl_json("conflicts") if c["kind"] == "merge"]
    assert (proposal["entity"], proposal["other"], proposal["source"]) == ("Bob", "Alice", "Alice")
    text = d.ctl("conflicts").stdout.decode()
    assert "merge them?" in text
    assert missing_of(gaps(d), "Bob") == [("attribute", "age")], "Bob keeps his files meanwhile"
    assert set(entities(d)) == {"Alice", "Bob"}

    res = d.ctl("resolve", str(proposal["id"]), "--take-new")
    assert res.returncode == 1 and b"--merge or --keep-apart" in res.stderr
    done = d.ctl_json("resolve", str(proposal["id"]), "--merge")
    assert (done["status"], done["value"]) == ("merged", "Alice")
    report = gaps(d)
    assert missing_of(report, "Alice") == [] and missing_of(report, "Bob") == []
    assert report["completeness"]["percent"] == 100.0
    rows = entities(d)
    assert rows["Bob"]["merged_into"] == rows["Alice"]["id"], "the merged entity keeps its row"
    assert json.loads(rows["Alice"]["attributes"])["age"] == "40"
    assert gaps(d, "--recompute") == report
    # Restarted, the merged state is what the catalog says.
    d.stop()
    d.start()
    d.wait_idle()
    assert gaps(d) == report


def test_an_entity_whose_folder_is_deleted_is_orphaned_then_forgotten(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = studio(make_daemon, tmp_path)
    character(root, "Alice")
    character(root, "Bob", scenes=("intro",))  # misses "dance": 1 of 4 requirements
    d.start()
    d.wait_idle()
    assert gaps(d)["completeness"] == {"percent": 87.5, "satisfied": 7, "required": 8, "orphaned": 0}
    shutil.rmtree(root / "Bob")
    wait_for(lambda: gaps(d)["orphaned"], what="Bob orphaned")
    report = gaps(d)
    (orphan,) = report["orphaned"]
    assert (orphan["type"], orphan["name"], orphan["path"]) == ("character", "Bob", str(root / "Bob"))
    assert orphan["since"].endswith("Z")
    assert report["entities"] == [], "not a list of missing items"
    assert report["completeness"] == {"percent": 100.0, "satisfied": 4, "required": 4, "orphaned": 1}
    text = d.ctl("gaps").stdout.decode()
    assert "1 orphaned left out" in text and "all files gone since" in text
    assert f"importctl forget {root / 'Bob'}" in text
    assert gaps(d, "--recompute") == report

    d.ctl("forget", str(root / "Bob"), check=True)
    wait_for(lambda: not gaps(d)["orphaned"], what="settled")
    report = gaps(d)
    assert report["entities"] == [] and report["completeness"]["orphaned"] == 0
    assert gaps(d, "--recompute") == report
    d.ctl("forget", "--undo", str(root / "Bob"), check=True)
    wait_for(lambda: gaps(d)["orphaned"], what="orphaned again after the undo")
