"""`importctl preview`: what a rule set would make of a tree, with the real daemon and importctl,
and nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Daemon
from tests.integration.test_entities import EXPECT, character


def catalog_bytes(d: Daemon) -> list[tuple[object, ...]]:
    return [
        tuple(d.sql(f"SELECT count(*) FROM {t}")[0])
        for t in ("entities", "entity_files", "conflicts", "attribute_sources", "runs")
    ]


def plain_root(make_daemon: Any, tmp_path: Path) -> tuple[Daemon, Path]:
    """A root catalogued without rules: what would the characters rules make of it?"""
    root = tmp_path / "legacy"
    root.mkdir()
    character(root, "Alice")
    character(root, "Bob", age=None, scenes=("intro",))
    (root / "misc").mkdir()
    (root / "misc" / "readme.txt").write_text("?")
    d = make_daemon({"legacy": root}, extra=EXPECT)
    d.write_config(f'\n[[roots]]\nname = "legacy"\npath = "{root}"\n')
    d.start()
    d.wait_idle()
    return d, root


def test_a_preview_shows_what_the_rules_would_make_and_writes_nothing(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = plain_root(make_daemon, tmp_path)
    before = catalog_bytes(d)
    res = d.ctl("preview", "legacy")
    assert res.returncode == 1 and b"has no rules" in res.stderr and b"--rules" in res.stderr
    p = d.ctl_json("preview", "legacy", "--rules", "characters")
    assert (p["committed"], p["run_id"], p["rules"]) == (False, None, "characters")
    assert (p["files"], p["mapped"], p["mapped_percent"]) == (7, 6, 85.7)
    assert p["totals"] == {"create": 2, "update": 0, "unchanged": 0, "unmatched": 1}
    assert p["roles"] == {"metadata": 1, "scene_video": 3, "source_image": 2}
    assert p["unmatched_by_folder"] == {"misc": 1}
    alice = next(r for r in p["rows"] if r["entity"]["name"] == "Alice")
    assert alice["action"] == "create" and alice["new_files"] == 4
    assert alice["changes"] == [{"field": "age", "current": None, "proposed": 30, "conflict": False}]
    gaps = {e["name"]: e["missing"] for e in p["gaps"]["entities"]}
    assert gaps == {"Bob": [{"kind": "attribute", "name": "age"}, {"kind": "scene", "name": "dance"}]}
    assert p["gaps"]["completeness"]["percent"] == 75.0
    assert catalog_bytes(d) == before, "nothing written"
    text = d.ctl("preview", str(root), "--rules", "characters").stdout.decode()
    assert "2 to create" in text and "create   character Alice" in text and "age: null → 30" in text
    assert "gaps that would result" in text and "☐ scene: dance" in text


def test_a_preview_against_the_catalog_and_with_a_rule_file(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "studio"
    root.mkdir()
    character(root, "Alice", age=30)
    d = make_daemon({"studio": root}, extra=EXPECT)
    # Polled once an hour: the changes below stay unseen by the daemon, as between two polls.
    d.write_config(
        f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "characters"\nwatch = "poll"\n'
        "poll_interval_seconds = 3600\n"
    )
    d.start()
    d.wait_idle()
    p = d.ctl_json("preview", "studio")
    assert p["totals"] == {"create": 0, "update": 0, "unchanged": 1, "unmatched": 0}, "the root's own rules"
    # A new file and a differing value, not yet seen by the daemon.
    (root / "Alice" / "dance.mp4").write_bytes(b"new")
    (root / "Alice" / "metadata.json").write_text(json.dumps({"age": 31, "notes": "n"}), encoding="utf-8")
    p = d.ctl_json("preview", str(root / "Alice"))
    (row,) = p["rows"]
    assert row["action"] == "update"
    assert {(c["field"], c["conflict"]) for c in row["changes"]} == {("age", True), ("notes", False)}
    # A rule file of one's own: every mp4 is a film.
    rules = tmp_path / "films.toml"
    rules.write_text(
        'match_key = "name"\n[[rules]]\npattern = "{title}/{scene}.mp4"\nentity_type = "film"\n'
        'name = "{title}"\nrole = "film"\n',
        encoding="utf-8",
    )
    p = d.ctl_json("preview", "studio", "--rules", str(rules))
    assert p["rules"] == "films.toml" and p["totals"]["create"] == 1
    assert p["rows"][0]["entity"] == {"type": "film", "name": "Alice"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\npattern = "{a}{b}"\n', encoding="utf-8")
    res = d.ctl("preview", "studio", "--rules", str(bad))
    assert res.returncode == 1 and b"bad.toml" in res.stderr
