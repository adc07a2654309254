"""The real daemon, the real importctl over a real socket, real files."""

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

import pytest

from importctl.client import DaemonError
from tests.conftest import BIN, Daemon, blake3_of, wait_for


def present(d: Daemon, relpath: bytes) -> list[dict[str, object]]:
    return [dict(r) for r in d.rows("status = 'present'") if bytes(r["relpath"]) == relpath]


def wait_present(
    d: Daemon, relpath: bytes, digest: str | None = None, timeout: float = 20
) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        rows = present(d, relpath)
        if rows and (digest is None or rows[0]["blake3"] == digest):
            return rows[0]
        return None

    return wait_for(check, timeout=timeout, what=f"{relpath!r} present")  # type: ignore[no-any-return]


def test_new_file_is_registered_with_its_blake3(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    data = os.urandom(100_000)
    (root / "Films").mkdir()
    (root / "Films" / "a.mkv").write_bytes(data)
    row = wait_present(d, b"Films/a.mkv", blake3_of(data))
    assert row["size"] == len(data)
    found = d.ctl_json("find", str(root / "Films" / "a.mkv"))
    assert found[0]["path"] == str(root / "Films" / "a.mkv")
    assert found[0]["blake3"] == blake3_of(data)
    assert found[0]["status"] == "present"
    assert set(found[0]) >= {"path", "root", "size", "blake3", "status", "first_seen", "last_seen"}
    by_hash = d.ctl_json("find", blake3_of(data)[:12])
    assert [r["path"] for r in by_hash] == [str(root / "Films" / "a.mkv")]


def test_modify_rename_move_delete_keep_one_row(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    (root / "a").mkdir()
    (root / "b").mkdir()
    f = root / "a" / "clip.mp4"
    f.write_bytes(b"v1" * 5000)
    first = wait_present(d, b"a/clip.mp4", blake3_of(b"v1" * 5000))

    f.write_bytes(b"v2" * 7000)  # modified in place
    modified = wait_present(d, b"a/clip.mp4", blake3_of(b"v2" * 7000))
    assert modified["id"] == first["id"]
    assert modified["first_seen"] == first["first_seen"]

    hashed_before = d.status()["counters"]["hashed_files"]
    f.rename(root / "a" / "renamed.mp4")  # rename
    renamed = wait_present(d, b"a/renamed.mp4")
    assert renamed["id"] == first["id"]
    (root / "a" / "renamed.mp4").rename(root / "b" / "moved.mp4")  # move across folders
    moved = wait_present(d, b"b/moved.mp4")
    assert moved["id"] == first["id"]
    d.wait_idle()
    assert d.status()["counters"]["hashed_files"] == hashed_before, "a rename must not re-hash"
    assert not present(d, b"a/clip.mp4") and not present(d, b"a/renamed.mp4")

    (root / "b" / "moved.mp4").unlink()  # delete
    row = wait_for(
        lambda: [r for r in d.rows(f"id = {first['id']}") if r["status"] == "missing"], what="missing"
    )[0]
    assert row["missing_since"] is not None
    assert len(d.rows()) == 1, "rows are marked missing, never deleted or duplicated"


def test_folder_moved_in_with_files_is_scanned(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    outside = tmp_path / "outside"
    (outside / "Séries" / "Show" / "Saison 1").mkdir(parents=True)
    for i in range(5):
        (outside / "Séries" / "Show" / "Saison 1" / f"S01E0{i}.mkv").write_bytes(os.urandom(3000))
    shutil.move(str(outside / "Séries"), str(d.roots["legacy"] / "Séries"))
    wait_for(lambda: len(d.rows("status = 'present'")) == 5, what="5 files from a moved-in folder")


def test_same_content_at_two_paths_is_one_content(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    data = os.urandom(5000)
    (root / "x.jpg").write_bytes(data)
    (root / "copy of x.jpg").write_bytes(data)
    wait_present(d, b"x.jpg")
    wait_present(d, b"copy of x.jpg")
    rows = d.ctl_json("find", blake3_of(data))
    assert sorted(r["path"] for r in rows) == sorted([str(root / "x.jpg"), str(root / "copy of x.jpg")])
    assert d.sql("SELECT count(*) FROM contents WHERE blake3 = ?", blake3_of(data))[0][0] == 1


def test_growing_file_is_registered_once_with_final_hash(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(settle=1.0).start()
    root = d.roots["legacy"]
    chunks = [os.urandom(64 * 1024) for _ in range(12)]
    with open(root / "copying.mov", "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            time.sleep(0.25)  # a slow copy: always less than settle_seconds between writes
            assert not present(d, b"copying.mov"), "registered while still being written"
    final = blake3_of(b"".join(chunks))
    wait_present(d, b"copying.mov", final)
    d.wait_idle()
    rows = [r for r in d.rows() if bytes(r["relpath"]) == b"copying.mov"]
    assert len(rows) == 1 and rows[0]["blake3"] == final
    assert d.status()["counters"]["hashed_files"] == 1


def test_file_vanishing_or_growing_mid_hash(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(settle=0.2).start()
    root = d.roots["legacy"]
    big = root / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(48):
            fh.write(os.urandom(1 << 20))
    # Wait for the hash to start, then delete the file under it. 48 MiB hash in some 20 ms on two
    # cores, so the file may be registered already: then the watcher's deletion marks it missing.
    # Either way it must not stay present (the unit tests in test_hasher.py delete, truncate and
    # grow files at a set point of the hash).
    wait_for(lambda: d.status()["queue"]["hashing"] > 0 or present(d, b"big.bin"), interval=0.01)
    big.unlink()
    d.wait_idle()
    wait_for(lambda: not present(d, b"big.bin"), timeout=15, what="the deleted file no longer present")
    # Grow a file while it is hashed: it goes back to settling and ends with the final content.
    grow = root / "grow.bin"
    with open(grow, "wb") as fh:
        for _ in range(48):
            fh.write(os.urandom(1 << 20))
    wait_for(lambda: d.status()["queue"]["hashing"] > 0 or present(d, b"grow.bin"), interval=0.01)
    with open(grow, "ab") as fh:
        fh.write(b"tail")
    final = blake3_of(grow.read_bytes())
    wait_present(d, b"grow.bin", final, timeout=30)
    assert d.proc is not None and d.proc.poll() is None


def test_permission_denied_is_an_error_row_and_retried(make_daemon) -> None:  # type: ignore[no-untyped-def]
    if os.getuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux) to drop root's DAC override")
    d = make_daemon()
    root = d.roots["legacy"]
    (root / "ok.txt").write_bytes(b"fine")
    secret = root / "secret.txt"
    secret.write_bytes(b"nobody may read this")
    secret.chmod(0o000)
    locked = root / "locked"
    locked.mkdir()
    (locked / "inside.txt").write_bytes(b"x")
    locked.chmod(0o000)
    try:
        d.start(drop_dac=os.getuid() == 0)
        wait_present(d, b"ok.txt")
        err = wait_for(
            lambda: [r for r in d.rows("status = 'error'") if bytes(r["relpath"]) == b"secret.txt"],
            what="error row",
        )[0]
        assert "permission denied" in err["error"]
        listed = d.ctl_json("errors")
        kinds = {(e["kind"], os.path.basename(e["path"])) for e in listed}
        assert ("file", "secret.txt") in kinds
        assert ("directory", "locked") in kinds
        text = d.ctl("errors").stdout.decode()
        assert "secret.txt: cannot open: permission denied" in text
        # Fixed by the operator: the next reconcile retries and registers it.
        secret.chmod(0o644)
        d.ctl("scan", "legacy", "--wait", check=True)
        wait_present(d, b"secret.txt", blake3_of(b"nobody may read this"))
    finally:
        locked.chmod(0o755)


def test_non_utf8_newline_and_unicode_names_round_trip(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = os.fsencode(str(d.roots["legacy"]))
    names = [
        b"caf\xe9 latin-1.jpg",  # not UTF-8
        b"two\nlines.mp4",
        unicodedata.normalize("NFC", "Séries é.txt").encode(),
        unicodedata.normalize("NFD", "Séries é.txt").encode(),
        b"\xff\xfe",
    ]
    for i, name in enumerate(names):
        with open(root + b"/" + name, "wb") as fh:
            fh.write(b"content %d" % i)
    wait_for(lambda: len(d.rows("status = 'present'")) == len(names), what="all names registered", timeout=30)
    for i, name in enumerate(names):
        found = d.ctl_json("find", os.fsdecode(root + b"/" + name))
        assert len(found) == 1
        assert os.fsencode(found[0]["path"]) == root + b"/" + name
        assert found[0]["blake3"] == blake3_of(b"content %d" % i)
    text = d.ctl("find", os.fsdecode(root + b"/" + names[1])).stdout.decode()
    assert "two\\nlines.mp4" in text and text.count("\n") == 1, "a newline in a name must not split a line"


def test_symlink_loops_are_not_followed(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    (root / "dir").mkdir()
    (root / "dir" / "real.txt").write_bytes(b"real")
    os.symlink("..", root / "dir" / "up")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink(str(root), root / "self")
    d.start()
    wait_present(d, b"dir/real.txt")
    d.wait_idle()
    assert [bytes(r["relpath"]) for r in d.rows()] == [b"dir/real.txt"]
    assert d.ctl("status").returncode == 0


def test_offline_root_marks_nothing_missing(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "mnt"
    root.mkdir()
    (root / ".importd-online").write_text("")
    for i in range(3):
        (root / f"f{i}.txt").write_bytes(b"%d" % i)
    d = make_daemon({"nas": root})
    d.write_config(f'\n[[roots]]\nname = "nas"\npath = "{root}"\nmarker = ".importd-online"\n')
    d.start()
    wait_for(lambda: len(d.rows("status = 'present'")) == 3)
    d.stop()
    # "Unmount": the marker and the files vanish together, while the daemon is down…
    shutil.rmtree(root)
    root.mkdir()
    d.start()
    state = wait_for(lambda: [r for r in d.status()["roots"] if r["state"] == "offline"], what="offline")
    assert state[0]["name"] == "nas"
    time.sleep(1.5)
    assert len(d.rows("status = 'present'")) == 3, "an unmounted root must not look like a mass deletion"
    # …and while it runs: a vanished marker takes the root offline without marking anything.
    (root / ".importd-online").write_text("")
    for i in range(3):
        (root / f"f{i}.txt").write_bytes(b"%d" % i)
    wait_for(lambda: d.status()["roots"][0]["state"] in ("watching", "polling"), what="back online")
    d.wait_idle()
    shutil.rmtree(root)
    wait_for(lambda: d.status()["roots"][0]["state"] == "offline", what="offline again")
    time.sleep(1.0)
    assert len(d.rows("status = 'present'")) == 3
    assert d.ctl_json("status")["files"]["missing"] == 0


def test_restart_with_no_changes_hashes_nothing(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    for i in range(200):
        (root / f"dir{i % 10}").mkdir(exist_ok=True)
        (root / f"dir{i % 10}" / f"f{i}.bin").write_bytes(os.urandom(100))
    d.start()
    wait_for(lambda: d.status()["files"]["present"] == 200, what="200 present")
    assert d.stop() == 0
    d.start()
    wait_for(lambda: (d.status()["last_scan"] or {}).get("state") == "completed", what="start-up reconcile")
    s = d.wait_idle()
    assert s["counters"]["hashed_files"] == 0
    assert s["files"]["present"] == 200
    assert s["last_scan"]["files_seen"] == 200 and s["last_scan"]["changed"] == 0


def test_first_import_is_read_before_the_watch_and_reconciled_behind_it(make_daemon) -> None:  # type: ignore[no-untyped-def]
    """A root never reconciled is imported unwatched (placing the watches walks the whole tree,
    which the import need not wait for); then it is watched, and walked once more for what
    changed meanwhile.
    A root reconciled before is watched first, as always."""
    d = make_daemon()
    root = d.roots["legacy"]
    for i in range(50):
        (root / f"f{i}.bin").write_bytes(os.urandom(100))
    d.start()

    def legacy_runs() -> list[dict[str, object]]:
        return [r for r in reversed(d.ctl_json("runs")) if r["root"] == "legacy"]

    def both_done() -> list[dict[str, object]] | None:
        runs = legacy_runs()
        return runs if len(runs) == 2 and all(r["status"] == "completed" for r in runs) else None

    runs = wait_for(both_done, what="start-up import and the reconcile behind the watch")
    assert [r["trigger"] for r in runs] == ["startup", "after-import"]
    assert runs[0]["counts"]["changed"] == 50  # type: ignore[index]
    assert runs[1]["counts"]["changed"] == 0 and runs[1]["counts"]["files_seen"] == 50  # type: ignore[index]
    wait_for(lambda: d.status()["roots"][0]["state"] == "watching", what="watching")
    (root / "late.bin").write_bytes(b"late")  # found by the watcher, not by a walk
    wait_present(d, b"late.bin", blake3_of(b"late"))
    assert [r["trigger"] for r in legacy_runs()] == ["startup", "after-import"]
    assert d.stop() == 0

    d.start()
    wait_for(lambda: len(legacy_runs()) == 3 and legacy_runs()[2]["status"] == "completed", what="restart")
    d.wait_idle()
    assert [r["trigger"] for r in legacy_runs()] == ["startup", "after-import", "startup"]


def test_changes_while_stopped_are_reconciled(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    (root / "keep.txt").write_bytes(b"keep")
    (root / "gone.txt").write_bytes(b"gone")
    (root / "old.txt").write_bytes(b"moving")
    d.start()
    wait_for(lambda: d.status()["files"]["present"] == 3)
    old_id = present(d, b"old.txt")[0]["id"]
    d.stop()
    (root / "gone.txt").unlink()
    (root / "old.txt").rename(root / "new.txt")
    (root / "added.txt").write_bytes(b"added")
    d.start()
    wait_present(d, b"added.txt")
    assert present(d, b"new.txt")[0]["id"] == old_id
    s = d.wait_idle()
    assert s["files"] == {"present": 3, "missing": 1, "error": 0}


def test_kill_9_during_registration_then_restart(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    n = 6000
    contents = {}
    for i in range(n):
        sub = root / f"d{i % 60}"
        sub.mkdir(exist_ok=True)
        data = os.urandom(64) + b"%d" % i
        (sub / f"f{i}").write_bytes(data)
        contents[f"d{i % 60}/f{i}".encode()] = blake3_of(data)
    d.start()

    def registered() -> int:
        return int(d.sql("SELECT count(*) FROM files WHERE status = 'present'")[0][0])

    # The first commit seen, the daemon is frozen at once: the few milliseconds between a count
    # and a kill were once enough for it to register the rest.
    wait_for(lambda: registered() > 0, interval=0.005, what="a partial registration")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGSTOP)
    partial = registered()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.proc = None
    assert 0 < partial < n
    assert registered() == partial
    d.start()
    wait_for(lambda: len(d.rows("status = 'present'")) == n, timeout=60, what="complete after restart")
    d.wait_idle()
    rows = d.rows()
    assert len(rows) == n, "nothing duplicated"
    assert {bytes(r["relpath"]): r["blake3"] for r in rows} == contents, "nothing lost, every hash right"
    if d.catalog_url.startswith("sqlite:"):
        assert d.sql("PRAGMA integrity_check")[0][0] == "ok"
        assert d.sql("PRAGMA foreign_key_check") == []
    assert d.sql("SELECT count(*) FROM runs WHERE status = 'running'")[0][0] == 0


def test_malformed_and_oversized_messages_get_error_replies(make_daemon) -> None:  # type: ignore[no-untyped-def]
    from importctl.protocol import MAX_REQUEST_BYTES, Request

    d = make_daemon().start()
    c = d.client()
    bad = [
        b"not json",
        b"\xff\xfe garbage",
        b"[1, 2, 3]",
        json.dumps({"v": 99, "id": "x", "method": "status"}).encode(),
        json.dumps({"v": 1, "id": "x", "method": "no_such_method"}).encode(),
        json.dumps({"v": 1, "id": "x", "method": "find", "params": {"query": 42}}).encode(),
        json.dumps({"v": 1, "id": "x", "method": "errors", "params": {"limit": True}}).encode(),
        json.dumps({"v": 1, "id": "x", "method": "find", "params": {"nope": "y"}}).encode(),
        json.dumps({"v": 1, "method": "status"}).encode(),
        b"{" * 100_000,
        b"[" * 100_000,  # deeper than the JSON parser recurses
    ]
    for frame in bad:
        reply = c.send_frame(frame)
        assert reply.ok is False, frame[:40]
        assert reply.error_code is not None and reply.error_code.value == "invalid", (frame[:40], reply)
        assert reply.daemon_version
    # Over the size limit: the client refuses to send it (the daemon would cut it off unanswered;
    # tests/integration/test_socket_door.py).
    big = json.dumps({"v": 1, "id": "x", "method": "status", "params": {"pad": "x" * MAX_REQUEST_BYTES}})
    with pytest.raises(DaemonError, match="over the limit"):
        c.send_frame(big.encode())
    # A multi-frame message gets an error reply too.
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.connect(f"ipc://{d.socket}")
    s.send_multipart([b"a", b"b", b"c"])
    assert s.poll(5000)
    assert json.loads(s.recv())["ok"] is False
    s.close(0)
    # And the daemon still serves.
    assert c.call_raw(Request("status")).ok
    assert d.ctl("status").returncode == 0


def test_importctl_exit_codes_and_daemon_down(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    res = d.ctl("status")
    assert res.returncode == 3
    err = res.stderr.decode()
    assert err.count("\n") == 1 and "systemctl status importd" in err
    res = d.ctl("status", "--json")
    assert res.returncode == 3 and res.stdout == b""
    # A socket file with nobody behind it: times out, still exit 3, never hangs.
    d.socket.parent.mkdir(parents=True, exist_ok=True)
    import socket as pysocket

    stale = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    stale.bind(str(d.socket))
    stale.close()
    t0 = time.monotonic()
    res = subprocess.run(
        [str(BIN / "importctl"), "--socket", str(d.socket), "--timeout", "1", "status"], capture_output=True
    )
    assert res.returncode == 3 and time.monotonic() - t0 < 10
    d.socket.unlink()
    d.start()
    assert d.ctl("find", "/definitely/not/a/root").returncode == 1
    assert d.ctl("find", str(d.roots["legacy"] / "nothing-here")).returncode == 1
    assert d.ctl("scan", "no-such-root").returncode == 1
    assert d.ctl("frobnicate").returncode == 2
    assert d.ctl("errors", "--limit", "zero").returncode == 2


def test_scan_wait_json_and_status_shape(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    for i in range(50):
        (root / f"f{i}").write_bytes(b"%d" % i)
    out = d.ctl_json("scan", "legacy", "--wait")
    assert out["scans"][0]["state"] == "completed"
    assert out["scans"][0]["files_seen"] == 50
    s = d.ctl_json("status")
    for key in (
        "version",
        "uptime_s",
        "roots",
        "files",
        "bytes",
        "queue",
        "hashed_files_per_s",
        "hashed_mib_per_s",
        "last_scan",
        "counters",
    ):
        assert key in s
    assert set(s["roots"][0]) >= {"name", "path", "state", "files"}
    assert set(s["files"]) == {"present", "missing", "error"}
    assert set(s["queue"]) >= {"settling", "hashing"}
    assert set(s["counters"]) >= {"hashed_files", "hashed_bytes"}
    assert s["files"]["present"] == 50
    # Scan of a sub-path, by absolute path.
    (root / "sub").mkdir()
    (root / "sub" / "x").write_bytes(b"x")
    out = d.ctl_json("scan", str(root / "sub"), "--wait")
    assert out["scans"][0]["path"] == "sub"
    wait_present(d, b"sub/x")


def test_sigterm_exits_cleanly_and_removes_socket(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    root = d.roots["legacy"]
    with open(root / "big", "wb") as fh:
        for _ in range(200):
            fh.write(os.urandom(1 << 20))
    time.sleep(0.5)
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10
    assert not d.socket.exists()


def test_sighup_adds_and_removes_roots(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    second = tmp_path / "second"
    second.mkdir()
    (second / "s.txt").write_bytes(b"second root")
    d.write_config(
        f'\n[[roots]]\nname = "legacy"\npath = "{d.roots["legacy"]}"\n'
        f'\n[[roots]]\nname = "second"\npath = "{second}"\n'
    )
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: {r["name"] for r in d.status()["roots"]} == {"legacy", "second"}, what="second root")
    wait_for(lambda: d.ctl_json("find", str(second / "s.txt"))[0]["status"] == "present")
    # A broken config on reload keeps the running one.
    d.config.write_text("this is = = not toml")
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert {r["name"] for r in d.status()["roots"]} == {"legacy", "second"}
    assert "reload failed" in d.log_text()


@pytest.mark.catalog_free
def test_invalid_config_exits_78_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = {
        'settle_seconds = "soon"': "settle_seconds",
        '[[roots]]\nname = "a"\npath = "relative/path"': "roots[0].path",
        '[[roots]]\nname = "a"\npath = "/x"\nwatch = "fanotify"': "roots[0].watch",
        "not toml [": "invalid TOML",
        "bogus_key = 1": "bogus_key",
    }
    for body, expected in cases.items():
        cfg = tmp_path / "bad.toml"
        cfg.write_text(body)
        res = subprocess.run(
            [str(BIN / "importd"), "run", "--config", str(cfg)], capture_output=True, timeout=30
        )
        assert res.returncode == 78, body
        err = res.stderr.decode()
        assert err.count("\n") == 1 and str(cfg) in err and expected in err, err


@pytest.mark.sqlite_only
def test_a_catalog_sqlite_cannot_read_exits_65_with_one_line_and_is_left_as_it_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A damaged catalog (or some other file at its path) is the operator's to restore: no
    traceback, no restart loop (65 is in RestartPreventExitStatus), and not one byte changed."""
    db = tmp_path / "state" / "catalog.db"
    db.parent.mkdir()
    garbage = os.urandom(3) + b"\x00" * 8189  # not "SQLite format 3"
    db.write_bytes(garbage)
    root = tmp_path / "root"
    root.mkdir()
    cfg = tmp_path / "importd.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[catalog]\nurl = "sqlite:///{db}"\n'
        f'[control]\nsocket = "{tmp_path / "c.sock"}"\n[[roots]]\nname = "a"\npath = "{root}"\n'
    )
    res = subprocess.run([str(BIN / "importd"), "run", "--config", str(cfg)], capture_output=True, timeout=30)
    assert res.returncode == 65
    err = res.stderr.decode()
    assert err.count("\n") == 1 and str(db) in err and "not a database" in err and "backup" in err, err
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in db.parent.iterdir()) == ["catalog.db"], "no -wal or -shm beside it"
    unit = (Path(__file__).parents[2] / "units" / "importd.service").read_text()
    assert "RestartPreventExitStatus=78 65" in unit


@pytest.mark.catalog_free
def test_a_catalog_server_it_cannot_reach_exits_69_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No PostgreSQL at that socket: one line naming the catalog (its password hidden), a hint, and
    an exit status systemd restarts on (a server that starts later is found then)."""
    root = tmp_path / "root"
    root.mkdir()
    cfg = tmp_path / "importd.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[catalog]\n'
        f'url = "postgresql://importd:secret@/importd?host={tmp_path / "nowhere"}"\n'
        f'[control]\nsocket = "{tmp_path / "c.sock"}"\n[[roots]]\nname = "a"\npath = "{root}"\n'
    )
    res = subprocess.run([str(BIN / "importd"), "run", "--config", str(cfg)], capture_output=True, timeout=30)
    err = res.stderr.decode()
    assert res.returncode == 69, err
    assert err.count("\n") == 1 and "cannot connect to the catalog postgresql://importd:***@" in err, err
    assert "secret" not in err and "hint:" in err


def test_second_daemon_on_same_socket_refuses(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    res = subprocess.run(
        [str(BIN / "importd"), "run", "--config", str(d.config)], capture_output=True, timeout=30
    )
    assert res.returncode == 75
    assert b"another importd" in res.stderr
    assert d.ctl("status").returncode == 0


def test_socket_mode_is_0660(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    assert (d.socket.stat().st_mode & 0o777) == 0o660


def test_notify_ready_and_status_reach_notify_socket(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket as pysocket

    d = make_daemon()
    path = tmp_path / "notify.sock"
    sock = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="2000000")
    logf = open(d.log, "ab")  # noqa: SIM115
    d.proc = subprocess.Popen(
        [str(BIN / "importd"), "run", "--config", str(d.config)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
    )
    logf.close()
    got: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ("READY=1" in got and "WATCHDOG=1" in got):
            got.append(sock.recv(4096).decode())
        assert "READY=1" in got and "WATCHDOG=1" in got
        assert d.socket.exists(), "READY=1 only after the control socket is bound"
        d.stop()
        rest = []
        sock.settimeout(0.5)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest
    finally:
        sock.close()


def test_threads_do_not_block_status_during_cold_registration(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    for i in range(3000):
        (root / f"d{i % 30}").mkdir(exist_ok=True)
        (root / f"d{i % 30}" / f"{i}.dat").write_bytes(os.urandom(2048))
    d.start()
    answered = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            d.client(timeout=5).status()
            answered.append(time.monotonic() - t0)

    t = threading.Thread(target=poll)
    t.start()
    try:
        wait_for(lambda: d.status()["files"]["present"] == 3000, timeout=60)
    finally:
        stop.set()
        t.join()
    assert answered and max(answered) < 5


# The limit is machine-wide: a daemon another test starts meanwhile would fall back to polling too.
@pytest.mark.alone
def test_inotify_watch_limit_falls_back_to_polling(make_daemon) -> None:  # type: ignore[no-untyped-def]
    knob = Path("/proc/sys/fs/inotify/max_user_watches")
    try:
        original = knob.read_text()
        knob.write_text(original)
    except OSError:
        pytest.skip("cannot change fs.inotify.max_user_watches here")
    d = make_daemon()
    root = d.roots["legacy"]
    for i in range(40):
        (root / f"dir{i}").mkdir()
    d.write_config(f'\n[[roots]]\nname = "legacy"\npath = "{root}"\npoll_interval_seconds = 1\n')
    try:
        knob.write_text("5\n")
        d.start()
        s = wait_for(lambda: [r for r in d.status()["roots"] if r["state"] == "polling"], what="polling")[0]
    finally:
        knob.write_text(original)
    assert "fs.inotify.max_user_watches" in s["watch_error"]
    assert any("sysctl" in w for w in d.status()["warnings"])
    assert "watch limit" in d.log_text()
    (root / "dir3" / "late.txt").write_bytes(b"found by polling")
    wait_present(d, b"dir3/late.txt", timeout=15)


def test_poll_root_finds_changes_without_inotify(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    d.write_config(
        f'\n[[roots]]\nname = "legacy"\npath = "{root}"\nwatch = "poll"\npoll_interval_seconds = 1\n'
    )
    d.start()
    # The socket answers before the roots are registered (status stays available during start-up).
    roots = wait_for(lambda: d.status()["roots"], what="roots registered")
    assert roots[0]["state"] in ("polling", "scanning")
    (root / "on-the-share.txt").write_bytes(b"written by another machine")
    wait_present(d, b"on-the-share.txt", timeout=15)
    (root / "on-the-share.txt").unlink()
    wait_for(lambda: d.status()["files"]["missing"] == 1, timeout=15, what="missing after a poll")


def test_a_non_utf8_name_does_not_blind_the_watcher(make_daemon) -> None:  # type: ignore[no-untyped-def]
    # With watchfiles, such a name failed the watcher for good (importd reconciled, polled and
    # retried with back-off). inotify is read as bytes now: the watcher never fails, and a
    # rename and a delete next to that name are seen at once, not at the next poll.
    d = make_daemon().start()
    root = os.fsencode(str(d.roots["legacy"]))
    with open(root + b"/caf\xe9.txt", "wb") as fh:
        fh.write(b"latin-1 name")
    wait_present(d, b"caf\xe9.txt", timeout=20)
    with open(root + b"/later.txt", "wb") as fh:
        fh.write(b"later")
    wait_present(d, b"later.txt", timeout=5)
    os.rename(root + b"/later.txt", root + b"/na\xefve.txt")
    os.unlink(root + b"/caf\xe9.txt")
    wait_present(d, b"na\xefve.txt", timeout=5)
    wait_for(lambda: d.status()["files"]["missing"] == 1, timeout=5, what="the delete seen")
    assert d.status()["roots"][0]["state"] == "watching"
    assert "watcher for" not in d.log_text() and "Unable to decode" not in d.log_text()
