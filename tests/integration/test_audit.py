"""The audit log names who really asked (issue 20): the kernel's uid and pid of the caller
(SO_PEERCRED, which libzmq hands on with each message), with the client's claim only beside
them; a user who may not open the socket gets one line and exit 3; `[control] write_group`
keeps the methods that write under a root to a group, tested with real users."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from importctl.protocol import Method
from tests.conftest import BIN, Daemon, wait_for


def farm(root: Path) -> None:
    """A link whose target is gone: an orphan `repair-links` moves to the trash."""
    (root / "links").mkdir(parents=True)
    (root / "gone.mkv").write_bytes(os.urandom(2000))
    (root / "doc.txt").write_bytes(b"a document")
    os.symlink("../gone.mkv", root / "links" / "orphan")
    os.symlink("../doc.txt", root / "links" / "second")


def repair_log(d: Daemon) -> list[str]:
    return [
        line
        for log in (d.base / "state" / "logs").glob("repair-*.log")
        for line in log.read_text().splitlines()
    ]


def test_a_forged_who_is_logged_beside_the_kernels_uid_and_pid(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    root = d.roots["legacy"]
    farm(root)
    d.start()
    d.wait_idle()
    (root / "gone.mkv").unlink()
    d.wait_idle()
    me = f"uid=0(root) pid={os.getpid()}"
    # A raw request that claims to be "anyone": the kernel says who it is.
    c = d.client()
    link = str(root / "links" / "orphan")
    result = c.call(Method.APPLY_LINKS, {"actions": [{"link": link, "action": "trash"}], "who": "anyone"})
    assert result["results"][0]["status"] == "done", result
    [item] = d.ctl_json("trash")["items"]
    assert item["who"] == f"{me} (claims: anyone)"
    restored = c.call(Method.RESTORE, {"id": item["id"], "who": "the boss"})
    assert restored["status"] == "restored"
    lines = repair_log(d)
    assert any("action=trash" in line and f"who={me} (claims: anyone)" in line for line in lines), lines
    assert any("action=restore" in line and f"who={me} (claims: the boss)" in line for line in lines), lines
    # importctl run with USER=root claims root in its own words; its real pid is beside it.
    (root / "doc.txt").unlink()
    d.wait_idle()
    env = dict(os.environ, USER="somebody-else", LOGNAME="somebody-else")
    res = subprocess.run(
        [str(BIN / "importctl"), "--socket", str(d.socket), "repair-links", "--yes", "--json"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    [line] = [line for line in repair_log(d) if "links/second" in line]
    who = line.split("\twho=")[1].split("\t")[0]
    kernel, claim = who.split(" (claims: ")
    assert kernel.startswith("uid=0(root) pid=") and claim.startswith("somebody-else via importctl (pid ")
    assert kernel.removeprefix("uid=0(root) pid=") == claim.split("(pid ")[1].removesuffix("))"), who


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def users() -> Iterator[Callable[..., str]]:
    """Real users and groups, removed afterwards (root only)."""
    if os.geteuid() != 0:
        pytest.skip("creating a second user needs root (useradd); run the suite as root to test it")
    if not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("useradd and setpriv (util-linux, passwd) are needed to act as a second user")
    tag = secrets.token_hex(3)
    made_users: list[str] = []
    made_groups: list[str] = []

    def make(kind: str, name: str, *groups: str) -> str:
        full = f"idt{tag}{name}"
        if kind == "group":
            _run("groupadd", full)
            made_groups.append(full)
        else:
            _run(
                "useradd",
                "-M",
                "-N",
                "-g",
                groups[0],
                *(["-G", ",".join(groups[1:])] if groups[1:] else []),
                "-s",
                "/usr/sbin/nologin",
                full,
            )
            made_users.append(full)
        return full

    try:
        yield make
    finally:
        for user in made_users:
            subprocess.run(["userdel", user], capture_output=True)
        for group in made_groups:
            subprocess.run(["groupdel", group], capture_output=True)


def as_user(d: Daemon, user: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user_gid(user)}",
            "--init-groups",
            str(BIN / "importctl"),
            "--socket",
            str(d.socket),
            *args,
        ],
        capture_output=True,
        timeout=60,
        cwd="/",
    )


def user_gid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def test_socket_access_and_write_group_with_real_users(users, catalog_url_for) -> None:  # type: ignore[no-untyped-def]
    sock_group = users("group", "sock")
    admin_group = users("group", "admin")
    stranger = users("user", "stranger", "nogroup")
    reader = users("user", "reader", sock_group)
    admin = users("user", "admin", sock_group, admin_group)
    base = Path(tempfile.mkdtemp(prefix="importd-audit-"))  # /tmp/…: other users may pass through
    try:
        base.chmod(0o755)
        root = base / "legacy"
        farm(root)
        d = Daemon(
            base / "d",
            {"legacy": root},
            extra=f'write_group = "{admin_group}"\n',
            catalog_url=catalog_url_for(),
        )
        (base / "d").chmod(0o755)
        d.start()
        d.wait_idle()
        run_dir = d.socket.parent
        shutil.chown(run_dir, group=sock_group)
        run_dir.chmod(0o750)
        shutil.chown(d.socket, group=sock_group)

        # Not in the group: one line, exit 3, naming the group (no traceback, no usage error).
        res = as_user(d, stranger, "status")
        err = res.stderr.decode()
        assert res.returncode == 3, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "not accessible" in err and f"group {sock_group!r}" in err and str(d.socket) in err, err
        # The folder open, the socket file itself closed: the same answer.
        run_dir.chmod(0o755)
        res = as_user(d, stranger, "status")
        assert res.returncode == 3 and f"group {sock_group!r}" in res.stderr.decode(), res.stderr
        run_dir.chmod(0o750)

        # In the socket's group: reads work, writes under a root are kept to write_group.
        assert as_user(d, reader, "status").returncode == 0
        assert as_user(d, reader, "trash").returncode == 0
        (root / "gone.mkv").unlink()
        d.wait_idle()
        res = as_user(d, reader, "repair-links", "--yes")
        err = res.stderr.decode()
        assert res.returncode == 1 and "importctl: denied: " in err and admin_group in err, err
        assert os.path.islink(root / "links" / "orphan"), "nothing was changed"
        res = as_user(d, reader, "restore", "1")
        assert res.returncode == 1 and "denied" in res.stderr.decode() and admin_group in res.stderr.decode()
        assert "refused apply_links to uid=" in d.log_text()

        # A member of write_group may, and the audit names that user by the kernel's word.
        res = as_user(d, admin, "repair-links", "--yes")
        assert res.returncode == 0, res.stderr
        assert not os.path.lexists(root / "links" / "orphan")
        uid = __import__("pwd").getpwnam(admin).pw_uid
        [item] = d.ctl_json("trash")["items"]
        assert item["who"].startswith(f"uid={uid}({admin}) pid="), item["who"]
        wait_for(lambda: any(f"uid={uid}({admin})" in line for line in repair_log(d)), what="repair log")
        # root may too.
        assert d.ctl("restore", str(item["id"])).returncode == 0
        d.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)
