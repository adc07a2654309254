"""The brake on a mass disappearance, with the real daemon, importctl and trees: a reconcile or
a burst of watcher deletions over [safety] is held (rows stay present, gaps unchanged), then
confirmed or cleared by the files coming back; a single deletion and an offline root are not."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, wait_for
from tests.integration.test_entities import EXPECT, character, gaps

NAMES = [f"char{i:02d}" for i in range(10)]  # 10 characters, 4 files each: 40 files


def held_studio(make_daemon: Any, tmp_path: Path, marker: bool = False) -> tuple[Daemon, Path]:
    root = tmp_path / "studio"
    root.mkdir()
    for name in NAMES:
        character(root, name)
    d = make_daemon({"studio": root}, extra=EXPECT)
    roots = f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "characters"\n'
    if marker:
        (root / ".importd-online").write_text("")
        roots += 'marker = ".importd-online"\n'
    d.write_config(roots)
    d.start()
    wait_for(lambda: d.status()["files"]["present"] == 40, what="40 present")
    d.wait_idle()
    return d, root


def studio_status(d: Daemon) -> tuple[dict[str, Any], list[str]]:
    s = d.ctl_json("status")
    return s["roots"][0], s["warnings"]


def snapshot(d: Daemon) -> list[tuple[object, ...]]:
    return [(r["id"], bytes(r["relpath"]), r["status"], r["blake3"]) for r in d.rows()]


def test_a_reconcile_removing_30_percent_is_held_then_confirmed(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = held_studio(make_daemon, tmp_path)
    before_rows, before_gaps = snapshot(d), gaps(d)
    d.stop()
    for name in NAMES[:3]:  # 12 of 40 files: 30 %
        shutil.rmtree(root / name)
    d.start()
    state, warnings = wait_for(lambda: (s := studio_status(d))[0]["state"] == "held" and s, what="held")
    assert state["held"] == 12 and state["files"] == 40 and state["missing"] == 0
    assert any("12 files" in w and "importctl confirm-missing studio" in w for w in warnings), warnings
    text = d.ctl("status")
    assert text.returncode == 0 and b"held" in text.stdout and b"confirm-missing studio" in text.stderr
    assert snapshot(d) == before_rows, "every row as it was"
    assert gaps(d) == before_gaps, "no gap opens while held"
    assert "files vanished at once" in d.log_text()
    # Confirmed: the rows become missing, since they vanished; the gaps open.
    reply = d.ctl_json("confirm-missing", "studio")
    assert reply == {"root": "studio", "confirmed": 12}
    missing = d.rows("status = 'missing'")
    assert len(missing) == 12 and all(r["missing_since"] for r in missing)
    state, warnings = studio_status(d)
    assert state["state"] != "held" and state["held"] == 0 and state["missing"] == 12
    assert not any("confirm-missing" in w for w in warnings)
    # Their folders are gone whole: three orphaned characters, not three checklists.
    wait_for(lambda: len(gaps(d)["orphaned"]) == 3, what="orphaned")
    assert gaps(d)["completeness"]["orphaned"] == 3
    # Nothing held any more: a one-line error with a hint, exit 1.
    res = d.ctl("confirm-missing", "studio")
    assert res.returncode == 1 and b"nothing is held" in res.stderr and res.stderr.count(b"\n") == 1
    assert d.ctl("confirm-missing", "nosuch").returncode == 1


def test_held_then_restored_clears_by_itself_and_nothing_changed(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = held_studio(make_daemon, tmp_path)
    before_rows, before_gaps = snapshot(d), gaps(d)
    d.stop()
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in NAMES[:3]:
        shutil.move(root / name, aside / name)  # a share half gone: same inodes when back
    d.start()
    wait_for(lambda: studio_status(d)[0]["state"] == "held", what="held")
    for name in NAMES[:3]:
        shutil.move(aside / name, root / name)
    d.ctl("scan", "studio", "--wait", check=True)  # the next reconcile sees them
    state, warnings = wait_for(lambda: (s := studio_status(d))[0]["state"] != "held" and s, what="cleared")
    assert state["held"] == 0 and state["missing"] == 0 and warnings == []
    d.wait_idle()
    assert snapshot(d) == before_rows and gaps(d) == before_gaps
    assert "hold cleared, nothing changed" in d.log_text()


def test_a_burst_of_watcher_deletions_is_held_and_a_single_one_is_not(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = held_studio(make_daemon, tmp_path)
    before_gaps = gaps(d)
    # One deleted file is marked missing as always (the brake only acts on mass events).
    (root / NAMES[9] / "intro.mp4").unlink()
    wait_for(lambda: len(d.rows("status = 'missing'")) == 1, what="single deletion marked")
    assert studio_status(d)[0]["state"] != "held"
    d.wait_idle()
    after_single = wait_for(
        lambda: (g := gaps(d))["completeness"]["percent"] < before_gaps["completeness"]["percent"] and g,
        what="the single deletion's gap",
    )
    # A burst: four folders (16 of 39 files) removed while watched.
    for name in NAMES[:4]:
        shutil.rmtree(root / name)
    wait_for(lambda: studio_status(d)[0]["state"] == "held", what="held", timeout=30)
    time.sleep(1.5)  # the burst window has long closed
    state, warnings = studio_status(d)
    assert any("16 files" in w for w in warnings), warnings
    assert state["state"] == "held" and state["held"] == 16 and state["missing"] == 1
    assert len(d.rows("status = 'missing'")) == 1
    assert gaps(d) == after_single, "no gap opens while held"
    assert d.ctl_json("confirm-missing", "studio")["confirmed"] == 16
    assert len(d.rows("status = 'missing'")) == 17


def test_an_offline_root_comes_before_the_brake(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = held_studio(make_daemon, tmp_path, marker=True)
    before_rows = snapshot(d)
    # A share unmounted: its marker goes with half of its files.
    (root / ".importd-online").unlink()
    for name in NAMES[:5]:
        shutil.rmtree(root / name)
    wait_for(lambda: studio_status(d)[0]["state"] == "offline", what="offline")
    time.sleep(2.0)
    state, _ = studio_status(d)
    assert state["state"] == "offline" and state["held"] == 0
    assert snapshot(d) == before_rows
