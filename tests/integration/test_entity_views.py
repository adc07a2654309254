"""`importctl entities` and `importctl entity`, with the real daemon and importctl: what an
entity holds, where each value came from, its files by role, what it misses, its conflicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Daemon
from tests.integration.test_entities import EXPECT, character


def library(make_daemon: Any, tmp_path: Path) -> tuple[Daemon, Path, Path]:
    studio, lib = tmp_path / "studio", tmp_path / "lib"
    studio.mkdir()
    character(studio, "Élodie", age=30, scenes=("intro",))
    (studio / "Élodie" / "notes.txt").write_text("likes tea", encoding="utf-8")
    (studio / "personnages.csv").write_text("name,height\nÉlodie,170\nZoé,160\n", encoding="utf-8")
    film = lib / "Films" / "Élodie (2001)"
    film.mkdir(parents=True)
    (film / "Élodie (2001).mkv").write_bytes(b"film")
    d = make_daemon({"studio": studio, "lib": lib}, extra=EXPECT)
    d.write_config(
        f'\n[[roots]]\nname = "studio"\npath = "{studio}"\nrules = "characters"\n'
        f'\n[[roots]]\nname = "lib"\npath = "{lib}"\nrules = "films-series"\n'
    )
    d.start()
    d.wait_idle()
    return d, studio, lib


def test_an_entity_page_shows_values_with_their_sources_files_and_gaps(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, studio, _ = library(make_daemon, tmp_path)
    e = d.ctl_json("entity", "character:élodie")
    assert (e["type"], e["name"], e["key"]) == ("character", "Élodie", "name:élodie")
    attrs = e["attributes"]
    assert (attrs["age"]["value"], attrs["age"]["source"], attrs["age"]["detail"]) == (
        30,
        "metadata",
        "Élodie/metadata.json",
    )
    assert (attrs["notes"]["value"], attrs["notes"]["source"]) == ("likes tea", "sidecar")
    assert (attrs["height"]["value"], attrs["height"]["source"]) == ("170", "table")
    assert all(a["at"].endswith("Z") for a in attrs.values())
    roles = sorted((f["role"], Path(f["path"]).name, f["status"]) for f in e["files"])
    assert roles == [
        ("metadata", "metadata.json", "present"),
        ("scene_video", "intro.mp4", "present"),
        ("sidecar", "notes.txt", "present"),
        ("source_image", "source.jpg", "present"),
    ]
    assert all(f["path"].startswith(str(studio)) for f in e["files"])
    assert e["missing"] == [{"kind": "scene", "name": "dance"}]
    assert e["tags"] == [] and e["conflicts"] == [] and e["orphaned_since"] is None
    # The same page by id; a new conflicting value shows among its open conflicts.
    assert d.ctl_json("entity", str(e["id"]))["name"] == "Élodie"
    (studio / "Élodie" / "metadata.json").write_text(json.dumps({"age": 31}), encoding="utf-8")
    d.ctl("scan", "studio", "--wait", check=True)
    d.wait_idle()
    (conflict,) = d.ctl_json("conflicts")
    assert d.ctl_json("entity", "character:Élodie")["conflicts"] == [conflict["id"]]
    text = d.ctl("entity", "character:Élodie").stdout.decode()
    assert "age = 30" in text and "metadata: Élodie/metadata.json" in text
    assert "☐ scene: dance" in text and f"#{conflict['id']}" in text


def test_entity_forms_and_a_name_two_types_share(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, _ = library(make_daemon, tmp_path)
    assert d.ctl_json("entity", "zoé")["name"] == "Zoé", "a NAME unique across types"
    film = d.ctl_json("entity", "film:Élodie (2001)")
    assert (film["attributes"]["year"]["value"], film["attributes"]["year"]["source"]) == (
        2001,
        "folder_rule",
    )
    res = d.ctl("entity", "Élodie (2001)")
    assert res.returncode == 0, "unique: only the film has this name"
    two = tmp_path / "lib" / "Films" / "Élodie"
    two.mkdir()
    (two / "Élodie.mkv").write_bytes(b"other film")
    d.ctl("scan", "lib", "--wait", check=True)
    d.wait_idle()
    res = d.ctl("entity", "élodie")
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "2 entities are named" in err and "character:Élodie" in err and "film:Élodie" in err
    res = d.ctl("entity", "nobody")
    assert res.returncode == 1 and "no entity named 'nobody'" in res.stderr.decode()
    listed = d.ctl_json("entities")
    assert {(e["type"], e["name"]) for e in listed} == {
        ("character", "Élodie"),
        ("character", "Zoé"),
        ("film", "Élodie (2001)"),
        ("film", "Élodie"),
    }
    zoe = next(e for e in listed if e["name"] == "Zoé")
    assert (zoe["files"], zoe["present"], zoe["orphaned"]) == (0, 0, False)
    assert [e["type"] for e in d.ctl_json("entities", "--type", "film")] == ["film", "film"]
    assert "Zoé" in d.ctl("entities").stdout.decode()
