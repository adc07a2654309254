"""Entities, runs and the live gap report, with the real daemon and importctl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from importctl.protocol import TERMINAL_STATES
from tests.conftest import BIN, Daemon, wait_for

EXPECT = """
[expect.character]
attributes = ["age"]
roles = ["source_image"]
scenes = ["intro", "dance"]

[expect.series]
episodes = "contiguous"
"""


def character(
    root: Path, name: str, age: int | None = 30, scenes: tuple[str, ...] = ("intro", "dance")
) -> None:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        (folder / f"{scene}.mp4").write_bytes(os.urandom(2000))
    (folder / "source.jpg").write_bytes(os.urandom(1000))
    if age is not None:
        (folder / "metadata.json").write_text(json.dumps({"age": age}), encoding="utf-8")


def studio(make_daemon: Any, tmp_path: Path, extra: str = EXPECT) -> Daemon:
    root = tmp_path / "studio"
    root.mkdir(exist_ok=True)
    d = make_daemon({"studio": root}, extra=extra)
    d.write_config(f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "characters"\n')
    return d


def gaps(d: Daemon, *args: str) -> dict[str, Any]:
    return d.ctl_json("gaps", *args)  # type: ignore[no-any-return]


def missing_of(report: dict[str, Any], name: str) -> list[tuple[str, str]]:
    for e in report["entities"]:
        if e["name"] == name:
            return sorted((m["kind"], str(m["name"])) for m in e["missing"])
    return []


def entity_count(d: Daemon) -> int:
    return int(d.sql("SELECT count(*) FROM entities")[0][0])


def test_characters_tree_gaps_and_completeness(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice")
    character(root, "Bob", age=None, scenes=("intro",))
    (root / "Bob" / "source.jpg").unlink()
    d.start()
    d.wait_idle()
    report = gaps(d)
    assert missing_of(report, "Alice") == []
    assert missing_of(report, "Bob") == [("attribute", "age"), ("role", "source_image"), ("scene", "dance")]
    # 2 characters x (1 attribute + 1 role + 2 scenes) = 8 requirements, Bob misses 3.
    assert report["completeness"] == {"percent": 62.5, "satisfied": 5, "required": 8, "orphaned": 0}
    assert [e["name"] for e in report["entities"]] == ["Bob"], "only entities with something missing"
    text = d.ctl("gaps").stdout.decode()
    assert "62.5% (5 of 8" in text and "☐ scene: dance" in text and "☐ attribute: age" in text
    assert d.ctl_json("status")["completeness"]["percent"] == 62.5
    assert missing_of(gaps(d, "--entity", "bob"), "Bob"), "--entity matches case-insensitively"
    assert gaps(d, "--type", "series")["entities"] == []


def test_three_runs_make_no_duplicates_and_moves_keep_links(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    for name in ("Élodie", "Zoé", "marc"):
        character(root, name)
    d.start()
    d.wait_idle()
    first = entity_count(d)
    assert first == 3
    for _ in range(3):
        d.ctl("scan", "studio", "--wait", check=True)
    assert entity_count(d) == 3
    d.stop()
    d.start()
    d.wait_idle()
    assert entity_count(d) == 3
    # Renaming the folder's case keeps the entity (the key ignores case) and the file rows.
    ids_before = {
        bytes(r["relpath"]).split(b"/")[1]: r["id"]
        for r in d.rows("status='present'")
        if r["relpath"].startswith(b"marc/")
    }
    (root / "marc").rename(root / "Marc")
    wait_for(
        lambda: {bytes(r["relpath"]).split(b"/")[0] for r in d.rows("status='present'")} >= {b"Marc"},
        what="moved",
    )
    d.wait_idle()
    ids_after = {
        bytes(r["relpath"]).split(b"/")[1]: r["id"]
        for r in d.rows("status='present'")
        if r["relpath"].startswith(b"Marc/")
    }
    assert ids_after == ids_before
    assert entity_count(d) == 3
    assert missing_of(gaps(d), "marc") == []


def test_nfc_and_nfd_folders_are_one_entity(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    nfc = unicodedata.normalize("NFC", "Chloé")
    nfd = unicodedata.normalize("NFD", "Chloé")
    (root / nfc).mkdir()
    (root / nfd).mkdir()
    (root / nfc / "intro.mp4").write_bytes(b"a")
    (root / nfd / "dance.mp4").write_bytes(b"b")
    (root / nfd / "source.png").write_bytes(b"c")
    (root / nfc / "metadata.json").write_text('{"age": 22}')
    d.start()
    d.wait_idle()
    assert entity_count(d) == 1
    assert gaps(d)["completeness"]["percent"] == 100.0


def test_deleting_a_source_image_opens_a_gap_and_restoring_closes_it(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice")
    d.start()
    d.wait_idle()
    assert missing_of(gaps(d), "Alice") == []
    data = (root / "Alice" / "source.jpg").read_bytes()
    (root / "Alice" / "source.jpg").unlink()
    # Live: the watcher's event opens it (the next reconcile is hours away). How fast is a
    # benchmark's question (`make bench`, entities), not a timed assertion's.
    wait_for(
        lambda: missing_of(gaps(d), "Alice") == [("role", "source_image")],
        timeout=d.settle + 10.0,
        what="gap opens",
    )
    (root / "Alice" / "source.jpg").write_bytes(data)
    wait_for(lambda: missing_of(gaps(d), "Alice") == [], timeout=d.settle + 3.0, what="gap closes")
    assert gaps(d, "--recompute") == gaps(d), "the live report equals a full recomputation"


def test_expectation_added_on_reload_updates_the_report(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice")
    d.start()
    d.wait_idle()
    assert gaps(d)["completeness"]["percent"] == 100.0
    d.extra = EXPECT.replace('scenes = ["intro", "dance"]', 'scenes = ["intro", "dance", "finale"]')
    d.write_config(f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "characters"\n')
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: missing_of(gaps(d), "Alice") == [("scene", "finale")], what="new expectation")
    assert gaps(d, "--recompute") == gaps(d)


def test_conflicting_metadata_is_reported_not_applied(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice", age=30)
    d.start()
    d.wait_idle()
    (root / "Alice" / "metadata.json").write_text('{"age": 31, "notes": "new"}')
    conflicts = wait_for(lambda: d.ctl_json("conflicts"), what="a conflict")
    assert [(c["entity"], c["attribute"], c["current"], c["proposed"]) for c in conflicts] == [
        ("Alice", "age", 30, 31)
    ]
    assert "importctl resolve" in d.ctl("conflicts").stderr.decode()
    attrs = json.loads(d.sql("SELECT attributes FROM entities WHERE name='Alice'")[0][0])
    assert attrs["age"] == 30 and attrs["notes"] == "new", (
        "the new attribute is added, the differing one is not"
    )
    assert d.ctl("resolve", str(conflicts[0]["id"])).returncode == 2, "--keep or --take-new is required"
    out = d.ctl_json("resolve", str(conflicts[0]["id"]), "--take-new")
    assert out["value"] == 31 and out["status"] == "taken"
    assert d.ctl_json("conflicts") == []
    assert d.ctl("resolve", str(conflicts[0]["id"]), "--keep").returncode == 1


def test_unmatched_files_are_listed_by_folder(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice")
    (root / "Alice" / "old").mkdir()
    (root / "Alice" / "old" / "intro_v1.mp4").write_bytes(b"x")
    (root / "Thumbs.db").write_bytes(b"x")
    d.start()
    d.wait_idle()
    data = d.ctl_json("unmatched")
    assert sorted(os.path.relpath(f["path"], root) for f in data["files"]) == [
        "Alice/old/intro_v1.mp4",
        "Thumbs.db",
    ]
    assert data["by_folder"] == {"studio:Alice/old": 1, "studio:.": 1}
    assert "Thumbs.db" in d.ctl("unmatched", "studio").stdout.decode()


def test_runs_log_and_stored_gap_reports(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice")
    character(root, "Bob", age=40, scenes=("intro",))
    (root / "Bob" / "intro copy.mp4").write_bytes((root / "Bob" / "intro.mp4").read_bytes())
    d.start()
    d.wait_idle()
    runs = d.ctl_json("runs")
    first = runs[-1]
    assert first["status"] == "completed" and first["trigger"] == "startup"
    assert first["counts"]["entities_created"] == 2
    assert first["counts"]["files_registered"] == 8
    assert first["counts"]["duplicates"] == 1
    detail = d.ctl_json("run", str(first["id"]))
    actions = {(e["entity"], e["action"]) for e in detail["log"]}
    assert (
        ("Alice", "created") in actions and ("Bob", "created") in actions and ("Alice", "updated") in actions
    )
    assert any(e["action"] == "duplicate" for e in detail["log"])
    stored = gaps(d, "--run", str(first["id"]))
    assert missing_of(stored, "Bob") == [("scene", "dance")]
    # Progress over time: close the gap, rescan, and the new run's report differs.
    (root / "Bob" / "dance.mp4").write_bytes(b"dance")
    out = d.ctl_json("scan", "studio", "--wait")
    assert out["scans"][0]["state"] == "completed"
    latest = d.ctl_json("runs")[0]
    assert missing_of(gaps(d, "--run", str(latest["id"])), "Bob") == []
    assert missing_of(gaps(d, "--run", str(first["id"])), "Bob") == [("scene", "dance")]
    assert d.ctl("gaps", "--run", "9999").returncode == 1


def test_cancel_a_long_run(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    d.start()
    for i in range(300):
        character(root, f"c{i:03d}")
    started = d.ctl_json("scan", "studio")["scans"][0]
    run_id = wait_for(
        lambda: next(
            (r["id"] for r in d.ctl_json("runs", "--limit", "1000") if r["trigger"] == "manual"), None
        ),
        what="run row",
    )
    res = d.ctl("cancel", str(run_id))
    final = wait_for(
        lambda: next(
            (
                r
                for r in d.ctl_json("runs", "--limit", "1000")
                if r["id"] == run_id and r["status"] in TERMINAL_STATES
            ),
            None,
        ),
        what="run ended",
    )
    if res.returncode == 0:
        assert final["status"] == "cancelled"
    else:  # it finished before the cancel arrived
        assert final["status"] == "completed" and b"already ended" in res.stderr
    assert started["scan_id"]
    assert d.ctl("cancel", "424242").returncode == 1


def test_watch_streams_events_while_another_client_acts(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    d.start()
    watcher = subprocess.Popen(
        [str(BIN / "importctl"), "--socket", str(d.socket), "watch", "--json", "--timeout", "8"],
        stdout=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # let the subscription settle (PUB drops what nobody listens to yet)
        character(root, "Alice", scenes=("intro",))
        d.ctl("scan", "studio", "--wait", check=True)
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    events = [json.loads(line) for line in out.splitlines()]
    topics = {e["topic"] for e in events}
    assert {"files", "gaps", "run"} <= topics
    states = [e["data"]["state"] for e in events if e["topic"] == "run"]
    assert "completed" in states
    gap_events = [e for e in events if e["topic"] == "gaps"]
    assert any(ch["name"] == "Alice" for e in gap_events for ch in e["data"]["changed"])


def test_gaps_follow_redraws(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = studio(make_daemon, tmp_path)
    root = d.roots["studio"]
    character(root, "Alice", scenes=("intro",))
    d.start()
    d.wait_idle()
    proc = subprocess.Popen(
        [str(BIN / "importctl"), "--socket", str(d.socket), "gaps", "--follow", "--json"],
        stdout=subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(json.loads(line))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        wait_for(lambda: lines, what="first draw")
        assert missing_of(lines[0], "Alice") == [("scene", "dance")]
        (root / "Alice" / "dance.mp4").write_bytes(b"d")
        wait_for(lambda: missing_of(lines[-1], "Alice") == [], what="redraw with the gap closed")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        t.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_films_series_library(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lib = tmp_path / "lib"
    (lib / "Films" / "Le Grand Voyage (1998)").mkdir(parents=True)
    (lib / "Films" / "Le Grand Voyage (1998)" / "Le Grand Voyage (1998).mkv").write_bytes(b"f")
    (lib / "Séries" / "Les Voisins" / "Saison 01").mkdir(parents=True)
    (lib / "TV Shows" / "Les Voisins" / "Season 2").mkdir(parents=True)
    for ep in (1, 2, 4):
        (lib / "Séries" / "Les Voisins" / "Saison 01" / f"Les Voisins S01E{ep:02d}.mkv").write_bytes(
            b"%d" % ep
        )
    (lib / "TV Shows" / "Les Voisins" / "Season 2" / "Les Voisins S02E02.mkv").write_bytes(b"x")
    d = make_daemon({"lib": lib}, extra=EXPECT)
    d.write_config(f'\n[[roots]]\nname = "lib"\npath = "{lib}"\nrules = "films-series"\n')
    d.start()
    d.wait_idle()
    report = gaps(d, "--type", "series")
    assert len(report["entities"]) == 1
    missing = sorted(m["name"] for m in report["entities"][0]["missing"])
    assert missing == ["S01E03", "S02E01"]
    assert d.ctl_json("unmatched")["files"] == []


@pytest.mark.catalog_free
def test_shipped_rule_set_names_and_bad_rules_are_config_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    for rules, key in (
        ('"nope"', "roots[0].rules"),
        ('[{pattern = "{a}{b}", entity_type = "x", name = "{a}", role = "r"}]', "roots[0].rules[0]"),
    ):
        cfg.write_text(f'[[roots]]\nname = "a"\npath = "/srv/a"\nrules = {rules}\n')
        res = subprocess.run(
            [str(BIN / "importd"), "check-config", "--config", str(cfg)], capture_output=True
        )
        assert res.returncode == 78 and key in res.stderr.decode(), res.stderr
    cfg.write_text(
        '[[roots]]\nname = "a"\npath = "/srv/a"\nrules = "characters"\n[expect.character]\nroles = 3\n'
    )
    res = subprocess.run([str(BIN / "importd"), "check-config", "--config", str(cfg)], capture_output=True)
    assert res.returncode == 78 and b"expect.character.roles" in res.stderr


def test_moving_a_character_folder_between_roots_keeps_the_entity(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    character(a, "Alice")
    d = make_daemon({"a": a, "b": b}, extra=EXPECT)
    d.write_config(
        f'\n[[roots]]\nname = "a"\npath = "{a}"\nrules = "characters"\n'
        f'\n[[roots]]\nname = "b"\npath = "{b}"\nrules = "characters"\n'
    )
    d.start()
    d.wait_idle()
    assert entity_count(d) == 1
    shutil.move(str(a / "Alice"), str(b / "Alice"))
    wait_for(
        lambda: d.status()["files"]["present"] == 4 and d.status()["roots"][1]["files"] == 4, what="moved"
    )
    d.wait_idle()
    assert entity_count(d) == 1
    assert missing_of(gaps(d), "Alice") == []
    assert gaps(d, "--recompute") == gaps(d)
