"""Sidecars and NFO files with the real daemon and importctl on a real tree: what they bring
(attributes with their provenance, tags, scenes), hostile and broken files refused with a reason
and nothing else touched, conflicts with the catalog, and `importctl drift`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from importctl.protocol import DriftReply, Method
from tests.conftest import Daemon, wait_for
from tests.unit.importd.api.test_table import conforms

EXPECT = """
[expect.film]
attributes = ["tmdb_id"]

[expect.series]
episodes = "contiguous"
"""

MOVIE_NFO = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<movie>
  <title>Le Fabuleux Destin d'Amélie Poulain</title>
  <originaltitle>Amélie</originaltitle>
  <year>2001</year>
  <plot>Amélie, une serveuse, décide de changer la vie des autres.</plot>
  <uniqueid type="tmdb" default="true">194</uniqueid>
  <uniqueid type="imdb">tt0211915</uniqueid>
  <genre>Comédie</genre>
  <genre>Romance</genre>
  <tag>Paris</tag>
  <tag>Montmartre</tag>
</movie>
"""

TVSHOW_NFO = """<?xml version="1.0" encoding="UTF-8"?>
<tvshow>
  <title>Kaamelott</title>
  <year>2005</year>
  <plot>La vie quotidienne du roi Arthur.</plot>
  <tmdbid>1409</tmdbid>
  <imdbid>tt0443370</imdbid>
  <tag>humour</tag>
</tvshow>
"""

EPISODE_NFO = """<episodedetails>
  <title>Heat</title>
  <season>1</season>
  <episode>1</episode>
  <plot>Arthur a chaud.</plot>
  <uniqueid type="tmdb">98765</uniqueid>
  <tag>pilot</tag>
</episodedetails>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<movie><title>&lol9;</title></movie>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE movie [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<movie><title>&secret;</title><plot>&secret;</plot></movie>
"""


def write(path: Path, text: str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def library(make_daemon: Any, tmp_path: Path) -> tuple[Daemon, Path]:
    lib = tmp_path / "lib"
    old = time.time() - 3600  # written an hour ago, before the catalog took anything
    amelie = lib / "Films" / "Amélie (2001)"
    write(amelie / "Amélie.mkv", "film" * 100)
    write(amelie / "movie.nfo", MOVIE_NFO, old)
    write(amelie / "Amélie.json", json.dumps({"director": "Jeunet", "rating": 8, "tags": ["vu"]}), old)
    write(
        amelie / "Amélie.tags.json",
        json.dumps({"tags": ["favourite"], "entity_tags": [{"name": "French", "color": "#0055a4"}]}),
        old,
    )
    scenes = {"scenes": [{"type": "intro", "start": 0, "end": "00:02:30"}, {"type": "café", "start": 150}]}
    write(amelie / ".artifacts" / "scenes.json", json.dumps(scenes), old)
    playtime = lib / "Films" / "Playtime (1967)"
    write(playtime / "Playtime.mkv", "playtime" * 50)
    write(playtime / "Playtime.nfo", "<movie><title>Playtime</title><year>1968</year></movie>", old)
    hostile = {
        "Bomb (2000)": BILLION_LAUGHS,
        "Spy (2001)": EXTERNAL_ENTITY,
        "Broken (2002)": "<movie><title>Broken</title>",
        "Wrong (2003)": "<html><title>not an nfo</title></html>",
    }
    for folder, nfo in hostile.items():
        write(lib / "Films" / folder / f"{folder.split(' (')[0]}.mkv", folder * 10)
        write(lib / "Films" / folder / "movie.nfo", nfo, old)
    show = lib / "Séries" / "Kaamelott"
    write(show / "tvshow.nfo", TVSHOW_NFO, old)
    write(show / "Saison 01" / "Kaamelott S01E01.mkv", "e1" * 300)
    write(show / "Saison 01" / "Kaamelott S01E01.nfo", EPISODE_NFO, old)
    write(show / "Saison 01" / "Kaamelott S01E02.mkv", "e2" * 300)
    write(show / "Saison 01" / "Kaamelott S01E02.tags.json", json.dumps(["funny"]), old)
    d = make_daemon({"lib": lib}, extra=EXPECT)
    d.write_config(f'\n[[roots]]\nname = "lib"\npath = "{lib}"\nrules = "films-series"\n')
    d.start()
    d.wait_idle()
    return d, lib


def tags_of(d: Daemon, relpath: str) -> list[str]:
    rows = d.sql(
        "SELECT tags.name FROM file_tags JOIN tags ON tags.id = file_tags.tag_id "
        "JOIN files ON files.id = file_tags.file_id WHERE files.relpath = ? ORDER BY tags.key",
        os.fsencode(relpath),
    )
    return [r[0] for r in rows]


def gaps_agree(d: Daemon) -> None:
    assert d.ctl_json("gaps", "--recompute") == d.ctl_json("gaps"), "the live report equals a recomputation"


def test_nfo_and_json_sidecars_bring_attributes_tags_and_scenes(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _ = library(make_daemon, tmp_path)
    film = d.ctl_json("entity", "film:Amélie (2001)")
    attrs = {name: (a["value"], a["source"], a["detail"]) for name, a in film["attributes"].items()}
    assert attrs["tmdb_id"] == (194, "nfo", "Films/Amélie (2001)/movie.nfo")
    assert attrs["imdb_id"][:2] == ("tt0211915", "nfo")
    assert attrs["title"][0] == "Le Fabuleux Destin d'Amélie Poulain"
    assert attrs["original_title"][0] == "Amélie" and attrs["genres"][0] == ["Comédie", "Romance"]
    assert attrs["plot"][0].startswith("Amélie, une serveuse")
    assert attrs["year"][:2] == (2001, "folder_rule"), "the NFO agrees with the folder: no conflict"
    assert attrs["director"] == ("Jeunet", "sidecar", "Films/Amélie (2001)/Amélie.json")
    assert attrs["rating"][0] == 8 and "tags" not in attrs, "a JSON sidecar's tags are tags, not a value"
    assert attrs["scenes"][0] == [
        {"type": "intro", "start": 0.0, "end": 150.0},
        {"type": "café", "start": 150.0},
    ]
    assert attrs["scenes"][1] == "sidecar"
    assert {(t["name"], t["color"]) for t in film["tags"]} == {
        ("Paris", None),
        ("Montmartre", None),
        ("French", "#0055a4"),
    }
    assert tags_of(d, "Films/Amélie (2001)/Amélie.mkv") == ["favourite", "vu"]
    roles = {Path(f["path"]).name: f["role"] for f in film["files"]}
    assert roles["movie.nfo"] == "nfo" and roles["Amélie.tags.json"] == "video_tags"
    assert roles["scenes.json"] == "scenes" and roles["Amélie.json"] == "video_json"

    series = d.ctl_json("entity", "series:Kaamelott")
    sattrs = {name: a["value"] for name, a in series["attributes"].items()}
    assert (sattrs["tmdb_id"], sattrs["imdb_id"], sattrs["title"]) == (1409, "tt0443370", "Kaamelott")
    assert sattrs["s01e01"] == {"title": "Heat", "plot": "Arthur a chaud.", "tmdb_id": 98765}
    assert [t["name"] for t in series["tags"]] == ["humour"]
    assert tags_of(d, "Séries/Kaamelott/Saison 01/Kaamelott S01E01.mkv") == ["pilot"]
    assert tags_of(d, "Séries/Kaamelott/Saison 01/Kaamelott S01E02.mkv") == ["funny"]
    # The films whose NFO is hostile or broken miss their TMDB id, and only that.
    report = d.ctl_json("gaps")
    missing = {e["name"] for e in report["entities"]}
    assert missing == {"Bomb (2000)", "Spy (2001)", "Broken (2002)", "Wrong (2003)", "Playtime (1967)"}
    gaps_agree(d)


def test_hostile_and_broken_nfo_files_are_refused_with_a_reason(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _ = library(make_daemon, tmp_path)
    (run,) = [r for r in d.ctl_json("runs") if r["root"] == "lib"][-1:]
    log = d.ctl_json("run", str(run["id"]))["log"]
    failed = {line["detail"].split(": ", 1)[0]: line["detail"] for line in log if line["action"] == "failed"}
    assert "entity expansion or an external entity" in failed["Films/Bomb (2000)/movie.nfo"]
    assert "entity expansion or an external entity" in failed["Films/Spy (2001)/movie.nfo"]
    assert "malformed XML" in failed["Films/Broken (2002)/movie.nfo"]
    assert "root element <html> is not a Kodi NFO" in failed["Films/Wrong (2003)/movie.nfo"]
    assert len(failed) == 4, failed
    for name, year in (("Bomb (2000)", 2000), ("Spy (2001)", 2001)):
        e = d.ctl_json("entity", f"film:{name}")
        assert {k: a["value"] for k, a in e["attributes"].items()} == {"year": year}
        assert e["tags"] == [] and {Path(f["path"]).name for f in e["files"]} >= {"movie.nfo"}
    assert "root:x:0:0" not in json.dumps(d.ctl_json("entities")), "no external entity was read"
    assert d.status()["roots"][0]["state"] in ("watching", "polling")
    gaps_agree(d)


def drift_of(d: Daemon, *args: str) -> DriftReply:
    return d.ctl_json("drift", *args)  # type: ignore[no-any-return]


def test_disagreeing_edited_and_deleted_sidecars_show_as_drift(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, lib = library(make_daemon, tmp_path)
    # The Playtime NFO says 1968, the folder 1967: a conflict, and a drift line (the NFO is older).
    (conflict,) = d.ctl_json("conflicts")
    assert (conflict["entity"], conflict["attribute"], conflict["current"], conflict["proposed"]) == (
        "Playtime (1967)",
        "year",
        1967,
        1968,
    )
    report = drift_of(d)
    conforms(Method.DRIFT, report)
    (line,) = report["items"]
    assert (line["kind"], line["attribute"], line["sidecar"], line["catalog"]) == (
        "older",
        "year",
        1968,
        1967,
    )
    assert line["entity"]["name"] == "Playtime (1967)" and line["conflict"] == conflict["id"]
    assert line["source"] is not None and line["source"]["kind"] == "folder_rule"
    assert line["settle"].startswith(f"importctl resolve {conflict['id']} --keep")
    unreadable = {Path(u["path"]).parent.name for u in report["unreadable"]}
    assert unreadable == {"Bomb (2000)", "Spy (2001)", "Broken (2002)", "Wrong (2003)"}
    assert report["totals"] == {"newer": 0, "older": 1, "differs": 0, "gone": 0}

    # Someone edits a sidecar after the import: newer than the catalog's value.
    amelie = lib / "Films" / "Amélie (2001)"
    write(amelie / "Amélie.json", json.dumps({"director": "Jean-Pierre Jeunet", "rating": 8}))
    d.ctl("scan", "lib", "--wait", check=True)
    d.wait_idle()
    edited = next(c for c in d.ctl_json("conflicts") if c["attribute"] == "director")
    lines = {(i["entity"]["name"], i["attribute"]): i for i in drift_of(d, "lib")["items"]}
    newer = lines[("Amélie (2001)", "director")]
    assert (newer["kind"], newer["sidecar"], newer["catalog"]) == ("newer", "Jean-Pierre Jeunet", "Jeunet")
    assert newer["settle"] == f"importctl resolve {edited['id']} --take-new"
    gaps_agree(d)

    # Settled: the line goes.
    d.ctl("resolve", str(edited["id"]), "--take-new", check=True)
    assert ("Amélie (2001)", "director") not in {
        (i["entity"]["name"], i["attribute"]) for i in drift_of(d)["items"]
    }

    # A sidecar deleted: the values it gave are listed as gone, until it is forgotten.
    (amelie / ".artifacts" / "scenes.json").unlink()
    wait_for(
        lambda: any(i["kind"] == "gone" for i in drift_of(d)["items"]),
        timeout=d.settle + 30,
        what="the deletion reaches the catalog",
    )
    report = drift_of(d)
    conforms(Method.DRIFT, report)
    (gone,) = [i for i in report["items"] if i["kind"] == "gone"]
    assert (gone["attribute"], gone["sidecar"], gone["entity"]["name"]) == ("scenes", None, "Amélie (2001)")
    assert gone["path"] == str(amelie / ".artifacts" / "scenes.json")
    assert "importctl forget" in gone["settle"]
    text = d.ctl("drift").stdout.decode()
    assert "gone     film Amélie (2001): scenes" in text and "settle: " in text
    d.ctl("forget", str(amelie / ".artifacts" / "scenes.json"), check=True)
    assert not any(i["kind"] == "gone" for i in drift_of(d)["items"])
    assert d.ctl_json("entity", "film:Amélie (2001)")["attributes"]["scenes"]["value"], "the value stays"
    gaps_agree(d)
    res = d.ctl("drift", "nowhere")
    assert res.returncode == 1 and "no root named 'nowhere'" in res.stderr.decode()


def test_a_video_arriving_after_its_tags_sidecar_gets_its_tags(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, lib = library(make_daemon, tmp_path)
    late = lib / "Films" / "Late (2005)"
    write(late / "Late.tags.json", json.dumps(["late", {"name": "Night", "color": "#000080"}]))
    write(late / "movie.nfo", "https://www.themoviedb.org/movie/4242-late\n")
    wait_for(lambda: d.ctl_json("entity", "film:Late (2005)"), timeout=d.settle + 30, what="the sidecars")
    d.wait_idle()
    assert d.ctl_json("entity", "film:Late (2005)")["attributes"]["tmdb_id"]["value"] == 4242
    write(late / "Late.mkv", "late" * 1000)
    wait_for(
        lambda: tags_of(d, "Films/Late (2005)/Late.mkv") == ["late", "Night"],
        timeout=d.settle + 30,
        what="the video's tags",
    )
    # After a restart the waiting sidecars are known again (read back from the catalog).
    write(late / "Late.mkv.tags.json", json.dumps(["restarted"]))
    write(late / "Bonus.tags.json", json.dumps(["bonus"]))
    wait_for(
        lambda: tags_of(d, "Films/Late (2005)/Late.mkv") == ["late", "Night", "restarted"],
        timeout=d.settle + 30,
        what="a sidecar named with the video's extension",
    )
    d.wait_idle()
    assert d.stop() == 0
    d.start()
    d.wait_idle()
    write(late / "Bonus.mp4", "bonus" * 1000)
    wait_for(
        lambda: tags_of(d, "Films/Late (2005)/Bonus.mp4") == ["bonus"],
        timeout=d.settle + 30,
        what="the tags of a video that arrived after a restart",
    )
    gaps_agree(d)
