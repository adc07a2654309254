"""A root that goes dark says so (the real daemon): a watcher that fails and comes back walks what
it could have missed; a root unmounted without a marker goes offline with a warning and comes
back by itself; a root folder swapped under its path is watched anew; a folder made readable
again is walked by itself; a path past PATH_MAX is listed once in `importctl errors`."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from importd.pipeline.reconcile import PATH_MAX
from tests.conftest import Daemon, wait_for

NO_MEDIA = "[media]\nenabled = false\n"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def present(d: Daemon) -> set[bytes]:
    return {bytes(r["relpath"]) for r in d.rows("status = 'present'")}


def triggers(d: Daemon) -> list[str]:
    return [r["trigger"] for r in d.sql("SELECT trigger FROM runs ORDER BY id")]


def runs_done(d: Daemon, trigger: str) -> int:
    return len(d.sql("SELECT id FROM runs WHERE trigger = ? AND finished IS NOT NULL", trigger))


def root_status(d: Daemon) -> dict[str, object]:
    return d.status()["roots"][0]  # type: ignore[no-any-return]


def test_a_file_made_while_the_watcher_restarts_is_catalogued_without_waiting(
    make_daemon,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    d = make_daemon(extra=NO_MEDIA)
    root = d.roots["legacy"]
    (root / "before.txt").write_bytes(b"before")
    d.start()
    d.wait_idle()
    assert present(d) == {b"before.txt"}
    # The root folder moved away and back at once: its watch reports it gone (a watcher
    # failure); the folder is the same one, so the watcher is retried after its back-off (2 s).
    os.rename(root, tmp_path / "away")
    os.rename(tmp_path / "away", root)
    wait_for(lambda: runs_done(d, "watcher-failure"), timeout=30, what="the failure's reconcile")
    assert "watch-restart" not in triggers(d)
    (root / "in the gap.txt").write_bytes(b"made while no watch was in place")  # missed before
    wait_for(lambda: b"in the gap.txt" in present(d), timeout=30, what="the file made in the gap")
    assert "watch-restart" in triggers(d)
    wait_for(lambda: root_status(d)["state"] == "watching", timeout=10)
    (root / "after.txt").write_bytes(b"watched again")
    wait_for(lambda: b"after.txt" in present(d), timeout=30, what="a file under the new watch")


@contextlib.contextmanager
def tmpfs(path: Path, files: int, *extra: str) -> Iterator[None]:
    """A new tmpfs at `path` holding `files` files (and `extra` ones), filled before it appears
    there (mounted beside it, then bound in place), as a share is mounted whole."""
    staging = path.parent / f".{path.name}.staging"
    staging.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "importd-test", str(staging)], check=True)
    try:
        for i in range(files):
            (staging / f"f{i:02d}.txt").write_bytes(b"file %d" % i)
        for name in extra:
            (staging / name).write_bytes(name.encode())
        subprocess.run(["mount", "--bind", str(staging), str(path)], check=True)
    finally:
        unmount(staging)
    try:
        yield
    finally:
        if os.path.ismount(path):
            unmount(path)


def unmount(path: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)  # busy: a file still open in it
    subprocess.run(["umount", "-l", str(path)], check=True)


@needs_root
def test_a_tmpfs_root_unmounted_and_remounted_without_a_marker(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra=NO_MEDIA)
    root = d.roots["legacy"]
    with tmpfs(root, 30):
        d.start()
        d.wait_idle()
        assert len(present(d)) == 30
    # Unmounted: the bare mount point under it is not the root.
    wait_for(lambda: root_status(d)["state"] == "offline", timeout=10, what="offline")
    status = d.status()
    assert any("no longer a mount point" in w for w in status["warnings"]), status["warnings"]
    assert len(present(d)) == 30 and not d.rows("status = 'missing'")
    res = d.ctl("scan", "legacy", "--wait", "--json")
    assert res.returncode == 1 and [s["state"] for s in json.loads(res.stdout)["scans"]] == ["skipped"]
    assert len(present(d)) == 30 and not d.rows("status = 'missing'")
    # Mounted again (a new tmpfs: a new folder), with one more file: back by itself.
    with tmpfs(root, 30, "new.txt"):
        wait_for(lambda: b"new.txt" in present(d), timeout=30, what="the remounted root reconciled")
        wait_for(lambda: root_status(d)["state"] == "watching", timeout=10)
        (root / "later.txt").write_bytes(b"watched on the new mount")
        wait_for(lambda: b"later.txt" in present(d), timeout=30, what="a file under the new watch")
        d.wait_idle()
        assert not d.rows("status = 'missing'") and not d.status()["warnings"]
        assert "online" in triggers(d)
        d.stop()
    # Started while the share is not mounted: the empty mount point marks nothing missing.
    d.start()
    wait_for(lambda: root_status(d)["state"] == "offline", timeout=30, what="offline at start-up")
    assert any("is empty" in w for w in d.status()["warnings"])
    assert len(present(d)) == 32 and not d.rows("status = 'missing'")
    with tmpfs(root, 30):
        wait_for(lambda: root_status(d)["state"] == "watching", timeout=30, what="back online")
        d.wait_idle()
        assert len(present(d)) == 30 and {r["relpath"] for r in d.rows("status = 'missing'")} == {
            b"new.txt",
            b"later.txt",
        }
        d.stop()


def test_a_swapped_root_folder_is_watched_anew(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra=NO_MEDIA)
    root = d.roots["legacy"]
    (root / "kept.txt").write_bytes(b"kept")
    (root / "dropped.txt").write_bytes(b"only in the old folder")
    d.start()
    d.wait_idle()
    new = tmp_path / "legacy.new"
    new.mkdir()
    (new / "kept.txt").write_bytes(b"kept")
    (new / "only new.txt").write_bytes(b"only in the new folder")
    os.rename(root, tmp_path / "legacy.old")
    os.rename(new, root)
    wait_for(lambda: b"only new.txt" in present(d), timeout=30, what="the new folder reconciled")
    wait_for(lambda: root_status(d)["state"] == "watching", timeout=10)
    assert "another one now" in d.log_text()
    assert any("was replaced (moved or swapped)" in w for w in d.status()["warnings"])
    (root / "later.txt").write_bytes(b"watched in the new folder")
    (tmp_path / "legacy.old" / "old later.txt").write_bytes(b"the old folder is no longer the root")
    wait_for(lambda: b"later.txt" in present(d), timeout=30, what="a file under the new watch")
    d.wait_idle()
    assert present(d) == {b"kept.txt", b"only new.txt", b"later.txt"}
    assert {bytes(r["relpath"]) for r in d.rows("status = 'missing'")} == {b"dropped.txt"}
    assert "watcher for" not in d.log_text()  # no watcher failure, no back-off


def test_a_folder_readable_again_is_walked_by_itself(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra=NO_MEDIA)
    root = d.roots["legacy"]
    for name in ("locked at start", "locked later"):
        (root / name).mkdir()
        (root / name / "inside.txt").write_bytes(name.encode())
    (root / "locked at start").chmod(0)
    d.start(drop_dac=True)  # as root the daemon would read through the permission bits
    status = d.wait_idle()
    assert status["roots"][0]["unreadable_dirs"] == 1
    (root / "locked later").chmod(0)
    d.ctl("scan", "legacy", "--wait", check=True)
    assert root_status(d)["unreadable_dirs"] == 2
    (root / "locked later" / "added while locked.txt").write_bytes(b"x")
    # Readable again: its attribute change is the only event.
    (root / "locked at start").chmod(0o755)  # never watched: it could not be read
    (root / "locked later").chmod(0o755)  # watched while it could be read
    wait_for(lambda: root_status(d)["unreadable_dirs"] == 0, timeout=30, what="unreadable_dirs drops")
    wait_for(
        lambda: {b"locked at start/inside.txt", b"locked later/added while locked.txt"} <= present(d),
        timeout=30,
        what="the folders walked",
    )
    (root / "locked at start" / "watched now.txt").write_bytes(b"y")
    wait_for(lambda: b"locked at start/watched now.txt" in present(d), timeout=30, what="its new watch")
    assert "periodic" not in triggers(d)


def deep_folder(root: Path, depth_bytes: int) -> tuple[bytes, int]:
    """Folders of 200-byte names under `root` until the path passes `depth_bytes`; made through
    directory descriptors (the path itself is too long for mkdir). Returns the relpath and an
    open descriptor of the deepest folder."""
    fd = os.open(root, os.O_RDONLY)
    rel = b""
    i = 0
    while len(os.fsencode(str(root))) + 1 + len(rel) < depth_bytes:
        name = b"%02d" % i + b"d" * 198
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, rel, i = inner, rel + b"/" + name if rel else name, i + 1
    return rel, fd


def folder_at(top: Path, length: int) -> int:
    """A chain of folders under `top` whose path is `length` bytes long (give or take one): an
    open descriptor of the last."""
    fd = os.open(top, os.O_RDONLY)
    here = len(os.fsencode(str(top)))
    while (n := min(200, length - here - 1)) >= 1:
        os.mkdir(b"d" * n, dir_fd=fd)
        inner = os.open(b"d" * n, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, here = inner, here + 1 + n
    return fd


def test_a_path_past_path_max_is_listed_once_in_errors(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(extra=NO_MEDIA)
    root = d.roots["legacy"]
    (root / "ok.txt").write_bytes(b"ok")
    rel, fd = deep_folder(root, PATH_MAX + 300)
    with open(os.open(b"at start.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd), "wb") as fh:
        fh.write(b"too deep to be read by path")
    # A readable folder, and in it a file whose name takes its path past PATH_MAX: too big to be
    # read through its folder (only files up to 256 KiB are), so it cannot be opened.
    (root / "files").mkdir()
    near = folder_at(root / "files", PATH_MAX - 150)
    with open(os.open(b"f" * 200, os.O_CREAT | os.O_WRONLY, dir_fd=near), "wb") as fh:
        fh.write(os.urandom(300 << 10))
    os.close(near)
    d.start()
    d.wait_idle()
    d.ctl("scan", "legacy", "--wait", check=True)
    # While watched: a folder appears whose path is short of PATH_MAX, then a folder in it past it.
    (root / "live").mkdir()
    (root / "live" / "x.txt").write_bytes(b"x")
    _, deepest = deep_folder(root / "live", PATH_MAX - 250)
    os.mkdir(b"z" * 250, dir_fd=deepest)
    wait_for(lambda: b"live/x.txt" in present(d), timeout=30, what="the live folder")
    d.wait_idle()
    d.ctl("scan", "legacy", "--wait", check=True)
    errors = d.ctl_json("errors")
    too_long = [e for e in errors if "PATH_MAX" in (e["error"] or "")]
    assert sorted(e["kind"] for e in too_long) == ["directory", "directory", "file"], errors
    (big,) = [os.fsencode(e["path"]) for e in too_long if e["kind"] == "file"]
    assert big.startswith(os.fsencode(str(root / "files"))) and big.endswith(b"/" + b"f" * 200)
    paths = sorted(os.fsencode(e["path"]) for e in too_long if e["kind"] == "directory")
    assert any(p.endswith(b"z" * 250) for p in paths), paths
    assert any(rel.startswith(p[len(os.fsencode(str(root))) + 1 :]) for p in paths), paths
    assert present(d) >= {b"ok.txt", b"live/x.txt"} and not d.rows("status = 'missing'")
    warned = [line for line in d.log_text().splitlines() if "WARNING" in line and "PATH_MAX" in line]
    assert len(warned) == 3, warned  # once each, though walked three times
    os.close(fd)
    os.close(deepest)
