"""The real daemon watching a root full of names that are not UTF-8 (Latin-1, CP1252, Shift-JIS):
files created, renamed and deleted while the odd-named ones are hashed and their media read; a
renamed file and a renamed folder keep their rows without a re-hash."""

from __future__ import annotations

import os
import re
import time

import pytest
from PIL import Image

from tests.conftest import Daemon, wait_for

NAMES = [
    "café {i}.jpg".encode("latin-1"),
    "€uro – draft {i}.png".encode("cp1252"),
    "写真 {i}.png".encode("shift_jis"),
    "ファイル {i}.txt".encode("shift_jis"),
    b"line\nbreak {i}.txt",
]


def odd_name(kind: int, i: int) -> bytes:
    return NAMES[kind % len(NAMES)].replace(b"{i}", str(i).encode())


def write(path: bytes, seed: int) -> None:
    if path.endswith((b".jpg", b".png")):
        Image.new("RGB", (64, 48), ((seed * 37) % 256, (seed * 91) % 256, seed % 256)).save(
            os.fsdecode(path), format="JPEG" if path.endswith(b".jpg") else "PNG"
        )
    else:
        with open(path, "wb") as fh:
            fh.write(b"odd name %d " % seed + os.urandom(64))


def present(d: Daemon) -> dict[bytes, int]:
    return {bytes(r["relpath"]): r["id"] for r in d.rows("status = 'present'")}


def on_disk(root: bytes) -> set[bytes]:
    out: set[bytes] = set()
    for top, _dirs, files in os.walk(root):
        rel = top[len(root) + 1 :]
        out.update(rel + b"/" + f if rel else f for f in files)
    return out


def hashed_paths(d: Daemon) -> list[str]:
    """Paths the daemon hashed (its debug log), as the log spells them."""
    return re.findall(r"hashed legacy/(.*)", d.log_text())


def assert_never_blind(d: Daemon) -> None:
    log = d.log_text()
    assert "watcher for" not in log and "Unable to decode" not in log
    assert [r["state"] for r in d.status()["roots"]] == ["watching"]


def test_odd_names_never_blind_the_watcher_while_they_are_hashed(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = os.fsencode(str(d.roots["legacy"]))
    os.mkdir(root + b"/" + "Übersicht".encode("latin-1"))
    for i in range(60):
        sub = b"" if i % 2 else b"/" + "Übersicht".encode("latin-1")
        write(root + sub + b"/" + odd_name(i, i), i)
    d.start()
    wait_for(lambda: on_disk(root) == set(present(d)), timeout=60, what="the seeded tree registered")
    wait_for(lambda: d.status()["roots"][0]["state"] == "watching", what="watching")

    # New odd-named files are being hashed and read for media while others change around them.
    for i in range(100, 140):
        write(root + b"/" + odd_name(i, i), i)
    for i in range(1, 20, 2):  # renames of settled odd-named files
        os.rename(root + b"/" + odd_name(i, i), root + b"/renamed " + odd_name(i + 1, i))
    for i in range(21, 40, 2):  # deletes
        os.unlink(root + b"/" + odd_name(i, i))
    for i in range(100, 110):  # and renames of files still settling
        os.rename(root + b"/" + odd_name(i, i), root + b"/moved " + odd_name(i, i))

    # Well within the 60 s a poll would take: every change is in the catalog.
    wait_for(lambda: on_disk(root) == set(present(d)), timeout=15, what="catalog == disk")
    gone = {bytes(r["relpath"]) for r in d.rows("status = 'missing'")}
    assert {odd_name(i, i) for i in range(21, 40, 2)} <= gone
    assert_never_blind(d)


@pytest.mark.alone  # times the change's way to the catalog against a deadline
def test_a_renamed_settled_file_follows_within_a_second_without_a_rehash(make_daemon) -> None:  # type: ignore[no-untyped-def]
    # settle_seconds is 2: within 1 s only a rename that skips settling can land.
    d = make_daemon(settle=2.0)
    root = os.fsencode(str(d.roots["legacy"]))
    old, new = odd_name(0, 1), b"sub/" + odd_name(2, 1)
    os.mkdir(root + b"/sub")
    write(root + b"/" + old, 1)
    d.start()
    row_id = wait_for(lambda: present(d).get(old), what="registered")
    d.wait_idle()
    time.sleep(d.settle)  # settled long ago as far as the rename is concerned
    before = len(hashed_paths(d))
    started = time.monotonic()
    os.rename(root + b"/" + old, root + b"/" + new)
    wait_for(lambda: present(d).get(new) == row_id, timeout=5, interval=0.01, what="row at the new path")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the rename took {elapsed:.2f}s to reach the catalog"
    assert old not in present(d)
    assert len(hashed_paths(d)) == before  # moved, not hashed again
    assert_never_blind(d)


@pytest.mark.alone  # times the change's way to the catalog against a deadline
def test_a_folder_of_500_files_moved_keeps_every_row_without_a_rehash(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(settle=5.0)  # faster than settling could be
    root = os.fsencode(str(d.roots["legacy"]))
    folder = root + b"/" + "Gerät".encode("latin-1")
    os.makedirs(folder + b"/inner")
    os.mkdir(root + b"/archive")
    for i in range(500):
        with open(folder + (b"/inner/" if i % 2 else b"/") + odd_name(3, i), "wb") as fh:
            fh.write(b"file %d" % i)
    d.start()
    wait_for(lambda: len(present(d)) == 500, timeout=60, what="500 files registered")
    d.wait_idle()
    time.sleep(d.settle)
    ids = {rel[len("Gerät".encode("latin-1")) :]: rid for rel, rid in present(d).items()}
    before = len(hashed_paths(d))
    started = time.monotonic()
    new_name = b"archive/" + "Gerät 2".encode("cp1252")
    os.rename(folder, root + b"/" + new_name)

    def moved() -> bool:
        rows = present(d)
        return len(rows) == 500 and all(rel.startswith(new_name + b"/") for rel in rows)

    wait_for(moved, timeout=10, interval=0.02, what="every row under the new folder")
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the folder move took {elapsed:.2f}s to reach the catalog"
    assert {rel[len(new_name) :]: rid for rel, rid in present(d).items()} == ids  # same rows
    assert len(hashed_paths(d)) == before  # none hashed again
    d.wait_idle()
    assert d.rows("status = 'missing'") == []  # never marked missing on the way
    assert_never_blind(d)


def test_renames_onto_a_file_out_of_the_root_and_into_it(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = os.fsencode(str(d.roots["legacy"]))
    outside = os.fsencode(str(tmp_path / "outside"))
    os.makedirs(outside + b"/brought in")
    os.makedirs(root + b"/leaving/deeper")
    write(root + b"/" + odd_name(0, 1), 1)
    write(root + b"/" + odd_name(3, 2), 2)
    write(root + b"/leaving/deeper/" + odd_name(1, 3), 3)
    write(outside + b"/brought in/" + odd_name(2, 4), 4)
    d.start()
    wait_for(lambda: len(present(d)) == 3, what="three files registered")
    d.wait_idle()
    kept = present(d)[odd_name(0, 1)]

    os.rename(root + b"/" + odd_name(0, 1), root + b"/" + odd_name(3, 2))  # onto a catalogued file
    os.rename(root + b"/leaving", outside + b"/left")  # a folder leaves the root
    os.rename(outside + b"/brought in", root + b"/" + "arrivé".encode("latin-1"))  # one arrives

    expected = {odd_name(3, 2), "arrivé".encode("latin-1") + b"/" + odd_name(2, 4)}
    wait_for(lambda: set(present(d)) == expected, timeout=10, what="catalog == disk")
    assert present(d)[odd_name(3, 2)] == kept  # the renamed file's row, at the path it replaced
    gone = {bytes(r["relpath"]) for r in d.rows("status = 'missing'")}
    assert b"leaving/deeper/" + odd_name(1, 3) in gone
    assert_never_blind(d)
