"""Ghosts (rows marked missing) in `importctl check`, settled with `importctl forget` and brought
back with `--undo`; the exit bits of `check`. Real daemon, real importctl, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import BIN, Daemon, wait_for

EPISODES = """
[expect.series]
episodes = "contiguous"
"""


def missing_count(d: Daemon) -> int:
    return int(d.status()["files"]["missing"])


def check(d: Daemon) -> tuple[int, dict[str, Any]]:
    res = d.ctl("check", "--json")
    return res.returncode, json.loads(res.stdout)


def ghosts(report: dict[str, Any]) -> list[str]:
    return sorted(os.path.basename(f["path"]) for f in report["findings"] if f["kind"] == "ghost")


def statuses(d: Daemon, path: Path, *flags: str) -> list[str]:
    return sorted(r["status"] for r in d.ctl_json("find", str(path), *flags))


def started(make_daemon: Any) -> tuple[Daemon, Path]:
    d = make_daemon()
    root = d.roots["legacy"]
    (root / "keep.bin").write_bytes(b"keep")
    (root / "gone.bin").write_bytes(b"gone for good")
    (root / "old").mkdir()
    for name in ("x.bin", "y.bin", "z.bin"):
        (root / "old" / name).write_bytes(os.urandom(64))
    d.start()
    d.wait_idle()
    return d, root


def test_a_deleted_file_is_a_ghost_that_forget_settles_and_undo_brings_back(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d, root = started(make_daemon)
    assert check(d)[0] == 0
    (root / "gone.bin").unlink()
    wait_for(lambda: missing_count(d) == 1, what="the deletion marked missing")

    code, report = check(d)
    assert code == 8, report  # the ghost bit, never one of the shared codes 1-3
    (ghost,) = report["findings"]
    assert ghost["kind"] == "ghost" and ghost["path"] == str(root / "gone.bin")
    assert (
        ghost["missing_since"].endswith("Z") and ghost["detail"] == f"missing since {ghost['missing_since']}"
    )
    assert ghost["suggestion"] == f"restore the file, or importctl forget {root / 'gone.bin'}"
    text = d.ctl("check").stdout.decode()
    assert "Ghost entries" in text and f"fix: restore the file, or importctl forget {root}/gone.bin" in text

    # --dry-run names the row and changes nothing.
    dry = d.ctl_json("forget", str(root / "gone.bin"), "--dry-run")
    assert dry["dry_run"] is True and dry["count"] == 1 and dry["status"] == "forgotten"
    assert dry["files"] == [
        {
            "path": str(root / "gone.bin"),
            "root": "legacy",
            "relpath": "gone.bin",
            "missing_since": ghost["missing_since"],
        }
    ]
    assert check(d)[0] == 8 and missing_count(d) == 1
    assert [r["status"] for r in d.rows_at(b"gone.bin")] == ["missing"]

    done = d.ctl_json("forget", str(root / "gone.bin"))
    assert done["dry_run"] is False and done["count"] == 1 and done["status"] == "forgotten"
    # Forgotten: out of check and of the status counts, out of find, still in find --all.
    code, report = check(d)
    assert code == 0 and report["findings"] == []
    assert missing_count(d) == 0 and d.status()["files"]["present"] == 4
    res = d.ctl("find", str(root / "gone.bin"))
    assert res.returncode == 1 and res.stderr.decode() == (
        f"importctl: not_found: only forgotten rows at {root}/gone.bin"
        f" (hint: importctl find --all {root}/gone.bin shows them)\n"
    )
    assert statuses(d, root / "gone.bin", "--all") == ["forgotten"]
    assert [r["status"] for r in d.rows_at(b"gone.bin")] == ["forgotten"]
    # A second forget finds nothing left to forget.
    again = d.ctl("forget", str(root / "gone.bin"))
    assert again.returncode == 1 and again.stderr.decode().count("\n") == 1
    assert b"no catalog row marked missing" in again.stderr and b"find --all" in again.stderr

    back = d.ctl_json("forget", "--undo", str(root / "gone.bin"))
    assert back["status"] == "missing" and back["undo"] is True and back["count"] == 1
    assert back["files"][0]["missing_since"] == ghost["missing_since"], "its time is kept"
    code, report = check(d)
    assert code == 8 and ghosts(report) == ["gone.bin"]
    assert missing_count(d) == 1 and statuses(d, root / "gone.bin") == ["missing"]


def test_forget_a_folder_and_forgotten_rows_stay_forgotten(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d, root = started(make_daemon)
    (root / "old" / "x.bin").unlink()
    wait_for(lambda: missing_count(d) == 1, what="x.bin marked missing")
    d.ctl("forget", str(root / "old" / "x.bin"), check=True)
    # The folder goes (x.bin's row was already forgotten): y and z are missing, x stays forgotten.
    shutil.rmtree(root / "old")
    wait_for(lambda: missing_count(d) == 2, what="the folder's files marked missing")
    assert sorted(r["status"] for r in d.ctl_json("find", str(root / "old"), "--all")) == [
        "forgotten",
        "missing",
        "missing",
    ]
    assert ghosts(check(d)[1]) == ["y.bin", "z.bin"]

    # A relative FOLDER, from the operator's working directory.
    res = subprocess.run(
        [str(BIN / "importctl"), "--socket", str(d.socket), "forget", "old", "--dry-run", "--json"],
        capture_output=True,
        cwd=root,
    )
    assert res.returncode == 0, res.stderr
    dry = json.loads(res.stdout)
    assert [f["relpath"] for f in dry["files"]] == ["old/y.bin", "old/z.bin"]
    assert missing_count(d) == 2
    text = d.ctl("forget", str(root / "old")).stdout.decode()
    assert "2 rows forgotten" in text and f"{root}/old/y.bin" in text
    assert check(d)[0] == 0 and missing_count(d) == 0
    assert statuses(d, root / "old", "--all") == ["forgotten"] * 3

    # The whole folder back at once (x.bin too: it was forgotten as well).
    assert d.ctl_json("forget", "--undo", str(root / "old"))["count"] == 3
    assert ghosts(check(d)[1]) == ["x.bin", "y.bin", "z.bin"] and missing_count(d) == 3


def test_a_forgotten_path_that_reappears_is_a_new_row(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d, root = started(make_daemon)
    (root / "gone.bin").unlink()
    wait_for(lambda: missing_count(d) == 1, what="the deletion marked missing")
    d.ctl("forget", str(root / "gone.bin"), check=True)
    # The same bytes at the same path: not a revival of the forgotten row (nor a move of it).
    (root / "gone.bin").write_bytes(b"gone for good")
    wait_for(lambda: statuses(d, root / "gone.bin") == ["present"], what="registered again")
    assert statuses(d, root / "gone.bin", "--all") == ["forgotten", "present"]
    rows = d.rows_at(b"gone.bin")
    assert [r["status"] for r in rows] == ["forgotten", "present"]
    assert check(d)[0] == 0
    # Undo makes the old row missing history beside the live one; the path is on disk, so it is
    # no ghost.
    d.ctl("forget", "--undo", str(root / "gone.bin"), check=True)
    assert statuses(d, root / "gone.bin") == ["missing", "present"]
    assert check(d)[0] == 0


def test_forget_refuses_a_path_on_disk_and_an_offline_root(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = started(make_daemon)
    for target in (root / "keep.bin", root / "old", root):
        res = d.ctl("forget", str(target))
        err = res.stderr.decode()
        assert res.returncode == 1 and res.stdout == b""
        assert err.startswith("importctl: invalid: ") and err.count("\n") == 1, err
        assert "exists on disk" in err and "(hint: importctl scan" in err
    assert statuses(d, root / "keep.bin") == ["present"]
    res = d.ctl("forget", str(tmp_path / "elsewhere"))
    assert res.returncode == 1 and b"not under any configured root" in res.stderr
    assert d.ctl("forget").returncode == 2, "usage"

    # An unmounted share: its files are not gone, so nothing under it can be forgotten.
    d.stop()
    marker = root / ".mounted"
    marker.write_bytes(b"")
    d.write_config(f'\n[[roots]]\nname = "legacy"\npath = "{root}"\nmarker = ".mounted"\n')
    d.start()
    d.wait_idle()
    (root / "gone.bin").unlink()
    wait_for(lambda: missing_count(d) == 1, what="the deletion marked missing")
    marker.unlink()
    wait_for(lambda: d.status()["roots"][0]["state"] == "offline", what="root offline", timeout=90)
    res = d.ctl("forget", str(root / "gone.bin"))
    assert res.returncode == 1 and b"offline" in res.stderr and res.stderr.count(b"\n") == 1
    assert statuses(d, root / "gone.bin") == ["missing"]


def test_forgotten_files_leave_the_gap_report(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lib = tmp_path / "lib"
    season = lib / "Series" / "Les Voisins" / "Season 1"
    season.mkdir(parents=True)
    for ep in (1, 2, 3):
        (season / f"Les Voisins S01E{ep:02d}.mkv").write_bytes(b"%d" % ep)
    d = make_daemon({"lib": lib}, extra=EPISODES)
    d.write_config(f'\n[[roots]]\nname = "lib"\npath = "{lib}"\nrules = "films-series"\n')
    d.start()
    d.wait_idle()

    def gaps(*args: str) -> dict[str, Any]:
        report: dict[str, Any] = d.ctl_json("gaps", *args)
        return report

    def missing() -> list[str]:
        return sorted(str(m["name"]) for e in gaps()["entities"] for m in e["missing"])

    assert missing() == []
    last = season / "Les Voisins S01E03.mkv"
    last.unlink()
    # A missing file still counts for the highest episode: the gap opens.
    wait_for(lambda: missing() == ["S01E03"], what="the gap of the deleted last episode")
    assert gaps("--recompute") == gaps()
    d.ctl("forget", str(last), check=True)
    # Forgotten: as if it had never been there, so the season ends at E02.
    wait_for(lambda: missing() == [], what="the forgotten episode's gap closed")
    assert gaps("--recompute") == gaps(), "the live report equals a full recomputation"
    assert d.status()["completeness"]["percent"] == 100.0
    d.stop()
    d.start()
    d.wait_idle()
    assert missing() == [] and gaps("--recompute") == gaps(), "and so does the one loaded at start-up"
    d.ctl("forget", "--undo", str(last), check=True)
    wait_for(lambda: missing() == ["S01E03"], what="the gap back with the undo")
    assert gaps("--recompute") == gaps()


def test_check_exit_bits_never_read_as_the_shared_exit_codes(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root = started(make_daemon)
    (root / "gone.bin").unlink()
    wait_for(lambda: missing_count(d) == 1, what="the deletion marked missing")
    os.symlink("nowhere", root / "dangling")
    wait_for(lambda: check(d)[0] == 8 | 32, what="a ghost and a broken link")
    code, report = check(d)
    assert report["exit_status"] == code == 40 and report["counts"]["broken_link"] == 1
    lines = d.ctl("check", "--json-lines")
    assert lines.returncode == 40 and json.loads(lines.stdout.splitlines()[-1])["exit_status"] == 40
    # Daemon unreachable is 3, whatever a check would have found.
    res = subprocess.run(
        [str(BIN / "importctl"), "--socket", str(tmp_path / "none.sock"), "check"], capture_output=True
    )
    assert res.returncode == 3
