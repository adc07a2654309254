"""The CLI over a scripted client: exit codes (0 ok, 1 daemon error, 2 usage, 3 unreachable),
`--json` prints only JSON on stdout, errors are one stderr line with a hint."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from importctl import __version__, cli
from importctl.client import DaemonError, DaemonUnreachable
from importctl.protocol import DEFAULT_RUNS_LIMIT, ErrorCode


class ScriptedEvents:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        return self.events.pop(0) if self.events else None

    def __enter__(self) -> ScriptedEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ScriptedClient:
    """Answers each client method from `replies` (a value, a function of the arguments, or an
    exception to raise) and records the calls."""

    def __init__(self, replies: dict[str, Any], daemon_version: str = __version__) -> None:
        self.replies = replies
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.daemon_version: str | None = daemon_version

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.replies:
            raise AttributeError(name)

        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            reply = self.replies[name]
            if isinstance(reply, Exception):
                raise reply
            return reply(*args) if callable(reply) else reply

        return call


class Run:
    """`importctl ARGS` over a scripted client: (exit code, stdout, stderr)."""

    def __init__(self, client: ScriptedClient) -> None:
        self.client = client

    def __call__(self, *args: str) -> tuple[int, str, str]:
        with CliRunner().isolation() as (out, err, _):
            code = cli.main(list(args))
        return code, out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Run]]:
    """`run(replies)(*args)`: the CLI with a client that answers from `replies`."""

    def with_replies(replies: dict[str, Any], daemon_version: str = __version__) -> Run:
        client = ScriptedClient(replies, daemon_version)
        monkeypatch.setattr(cli, "Client", lambda socket, timeout: client)
        return Run(client)

    yield with_replies


SCAN = {
    "scan_id": 1,
    "run_id": 4,
    "root": "films",
    "path": "",
    "trigger": "manual",
    "state": "completed",
    "files_seen": 12,
    "changed": 2,
    "pending": 0,
    "vanished": 1,
    "errors": 0,
    "entities_created": 0,
    "entities_updated": 0,
    "files_registered": 2,
    "duplicates": 0,
    "started": "2026-11-21T08:00:00.000Z",
    "finished": "2026-11-21T08:00:00.412Z",
    "message": "",
}
STATUS = {
    "version": __version__,
    "uptime_s": 12.0,
    "pid": 42,
    "catalog": "sqlite:////tmp/catalog.db",
    "roots": [
        {
            "name": "films",
            "path": "/srv/films",
            "state": "watching",
            "files": 12,
            "missing": 1,
            "errors": 0,
            "watch": "inotify",
            "watch_error": None,
            "unreadable_dirs": 0,
        }
    ],
    "files": {"present": 12, "missing": 1, "error": 0},
    "bytes": 2048,
    "queue": {"settling": 0, "hashing": 0, "writing": 0, "mapping": 0},
    "hashed_files_per_s": 0.0,
    "hashed_mib_per_s": 0.0,
    "counters": dict.fromkeys(
        ("hashed_files", "hashed_bytes", "registered", "moved", "vanished", "errors"), 0
    ),
    "last_scan": SCAN,
    "completeness": {"percent": 50.0, "satisfied": 1, "required": 2},
    "media": {
        "enabled": False,
        "ready": False,
        "intake": 0,
        "queued": 0,
        "running": 0,
        "done": 0,
        "failed": 0,
        "faces": {"state": "enabled", "reason": None, "path": None},
    },
    "maintenance": {
        "links": {"broken": 1},
        "scrub": {"files": 12, "verified": 0, "oldest_verified": None},
        "last_sweep": None,
    },
    "warnings": ["films: watch limit reached"],
}


def test_status_text_and_json(run: Callable[..., Run]) -> None:
    ctl = run({"status": STATUS})
    code, out, err = ctl("status")
    assert code == 0
    assert "files: 12 present (2.0 KiB), 1 missing, 0 in error" in out
    assert "last scan: films completed at 2026-11-21T08:00:00.412Z: 12 seen, 2 changed, 1 vanished" in out
    assert "completeness: 50.0% (1 of 2 requirements)" in out
    assert err == "warning: films: watch limit reached\n"
    code, out, err = ctl("status", "--json")
    assert code == 0 and json.loads(out) == STATUS


def test_a_daemon_error_is_one_line_with_a_hint_and_exit_1(run: Callable[..., Run]) -> None:
    ctl = run({"find": DaemonError(ErrorCode.NOT_FOUND, "nothing in the catalog at /srv/x")})
    code, out, err = ctl("find", "/srv/x", "--json")
    assert code == 1 and out == ""
    assert err == (
        "importctl: not_found: nothing in the catalog at /srv/x"
        " (hint: importctl scan PATH, if it was added while importd was not looking)\n"
    )
    busy = run({"check": DaemonError(ErrorCode.BUSY, "sweep run 3 is still running")})
    assert busy("check") == (
        1,
        "",
        "importctl: busy: sweep run 3 is still running (hint: retry in a moment)\n",
    )


def test_an_unreachable_daemon_exits_3(run: Callable[..., Run]) -> None:
    message = "no control socket at /run/x.sock; is importd running? try: systemctl status importd"
    code, out, err = run({"status": DaemonUnreachable(message)})("status", "--json")
    assert (code, out, err) == (3, "", f"importctl: {message}\n")


def test_usage_errors_exit_2(run: Callable[..., Run]) -> None:
    ctl = run({"resolve": {}, "runs": []})
    assert ctl("resolve", "3")[0] == 2
    assert "say --keep or --take-new" in ctl("resolve", "3")[2]
    assert ctl("no-such-command")[0] == 2
    assert ctl("runs", "--limit", "0")[0] == 2
    assert ctl.client.calls == []


def test_runs_asks_for_the_shared_default(run: Callable[..., Run]) -> None:
    row = {
        "id": 4,
        "kind": "reconcile",
        "trigger": "manual",
        "root": "films",
        "path": None,
        "status": "completed",
        "started": "2026-11-21T08:00:00.000Z",
        "finished": "2026-11-21T08:00:00.412Z",
        "counts": {
            "files_seen": 12,
            "changed": 2,
            "files_registered": 2,
            "vanished": 1,
            "entities_created": 1,
            "entities_updated": 0,
            "duplicates": 0,
            "errors": 0,
        },
        "detail": None,
    }
    ctl = run({"runs": [row]})
    code, out, _ = ctl("runs")
    assert code == 0 and ctl.client.calls == [("runs", (DEFAULT_RUNS_LIMIT,))]
    assert "2026-11-21T08:00:00.000Z  seen 12, registered 2, entities +1/~0" in out


def test_scan_wait_exit_codes(run: Callable[..., Run]) -> None:
    started = {"scans": [SCAN | {"state": "queued"}]}
    partial = run({"scan": started, "scan_progress": SCAN | {"state": "partial", "errors": 1}})
    code, out, err = partial("scan", "films", "--wait")
    assert code == 0 and "films: partial: 12 files seen" in out
    assert err == "importctl: some files could not be read; see: importctl errors\n"
    failed = run({"scan": started, "scan_progress": SCAN | {"state": "failed", "message": "disk gone"}})
    code, out, _ = failed("scan", "films", "--wait", "--json")
    assert code == 1 and json.loads(out)["scans"][0]["message"] == "disk gone"
    code, out, _ = run({"scan": started})("scan", "--json")
    assert code == 0 and json.loads(out) == started


def test_check_exits_with_the_finding_bits(run: Callable[..., Run]) -> None:
    result = {
        "run_id": 7,
        "state": "completed",
        "findings": [
            {
                "kind": "broken_link",
                "path": "/srv/films/l",
                "suggestion": "importctl repair-links /srv/films/l",
            },
            {"kind": "ghost", "path": "/srv/films/g", "suggestion": "importctl scan /srv/films/g"},
        ],
        "counts": {"ghost": 1, "broken_link": 1},
        "started": "2026-11-21T08:00:00.000Z",
        "finished": "2026-11-21T08:00:01.000Z",
        "files_seen": 12,
        "scrub": {},
        "exit_status": 40,
    }
    progress = {"run_id": 7, "state": "running", "phase": "walking", "files_seen": 0, "findings": 0}
    ctl = run({"check": progress | {"scrub": {}, "message": ""}, "check_result": result})
    code, out, _ = ctl("check", "--json")
    assert code == 8 | 32 and json.loads(out) == result
    code, out, _ = ctl("check", "--json-lines")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 40 and lines[-1] == {"counts": lines[-1]["counts"], "exit_status": 40}
    code, out, _ = ctl("check")
    assert code == 40 and "Broken symlinks (1)" in out


def test_a_version_mismatch_warns(run: Callable[..., Run]) -> None:
    code, _, err = run({"cancel": {"id": 3, "status": "cancelled"}}, daemon_version="9.9.9")("cancel", "3")
    assert code == 0 and f"importctl {__version__} talks to importd 9.9.9" in err


def test_watch_prints_one_line_per_event(run: Callable[..., Run]) -> None:
    events = [
        {"v": 1, "topic": "run", "seq": 1, "at": "2026-11-21T08:00:00.412Z", "data": SCAN},
        {
            "v": 1,
            "topic": "files",
            "seq": 2,
            "at": "2026-11-21T08:00:00.500Z",
            "data": {"counts": {"new": 2}, "sample": []},
        },
        {
            "v": 1,
            "topic": "gaps",
            "seq": 3,
            "at": "2026-11-21T08:00:00.600Z",
            "data": {
                "completeness": {"percent": 50.0, "satisfied": 1, "required": 2},
                "changed": [{"type": "character", "name": "Ada", "missing": []}],
            },
        },
    ]
    ctl = run({"events": lambda topics: ScriptedEvents(events)})
    code, out, _ = ctl("watch", "--count", "3")
    assert code == 0 and out.splitlines() == [
        "run 4 films: completed (12 seen, 2 changed, 0 pending)",
        "files: 2 new",
        "gaps: completeness 50.0% (Ada)",
    ]
    code, out, _ = ctl("watch", "--count", "3", "--json")
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == events


def test_gaps_checklist(run: Callable[..., Run]) -> None:
    report = {
        "completeness": {"percent": 50.0, "satisfied": 1, "required": 2},
        "totals": {"attribute": 1},
        "entities": [{"type": "character", "name": "Ada", "missing": [{"kind": "attribute", "name": "age"}]}],
    }
    code, out, _ = run({"gaps": report})("gaps")
    assert code == 0 and out.splitlines() == [
        "Completeness: 50.0% (1 of 2 requirements satisfied)",
        "Missing: 1 attribute",
        "",
        "character Ada",
        "  ☐ attribute: age",
    ]


FORGET = {
    "status": "forgotten",
    "undo": False,
    "dry_run": True,
    "count": 1,
    "files": [
        {
            "path": "/srv/films/gone.mkv",
            "root": "films",
            "relpath": "gone.mkv",
            "missing_since": "2026-11-21T08:00:00.412Z",
        }
    ],
}


def test_forget_shows_the_rows_and_says_what_changed(run: Callable[..., Run]) -> None:
    ctl = run({"forget": FORGET})
    code, out, _ = ctl("forget", "/srv/films/gone.mkv", "--dry-run")
    assert code == 0 and ctl.client.calls == [("forget", ("/srv/films/gone.mkv", False, True))]
    assert out.splitlines() == [
        "/srv/films/gone.mkv  (missing since 2026-11-21T08:00:00.412Z)",
        "would mark 1 row forgotten (dry run: nothing changed)",
    ]
    code, out, _ = ctl("forget", "/srv/films/gone.mkv", "--undo", "--json")
    assert code == 0 and json.loads(out) == FORGET
    assert ctl.client.calls[-1] == ("forget", ("/srv/films/gone.mkv", True, False))


def test_forget_of_a_path_on_disk_is_one_line_with_the_daemons_own_hint(run: Callable[..., Run]) -> None:
    message = (
        "/srv/x exists on disk: only files that are gone can be forgotten (hint: importctl scan /srv/x …)"
    )
    code, out, err = run({"forget": DaemonError(ErrorCode.INVALID, message)})("forget", "/srv/x")
    assert (code, out) == (1, "")
    assert err == f"importctl: invalid: {message}\n"  # one line, one hint


def test_find_all_asks_for_forgotten_rows_too(run: Callable[..., Run]) -> None:
    ctl = run({"find": []})
    ctl("find", "/srv/x")
    ctl("find", "/srv/x", "--all")
    ctl("find", "/srv/x", "--site")
    assert ctl.client.calls == [
        ("find", ("/srv/x", False, False)),
        ("find", ("/srv/x", True, False)),
        ("find", ("/srv/x", False, True)),
    ]


def test_forget_completes_like_the_other_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMP_WORDS", "importctl for")
    monkeypatch.setenv("COMP_CWORD", "1")
    monkeypatch.setenv("_IMPORTCTL_COMPLETE", "bash_complete")
    with CliRunner().isolation() as (out, _, _), pytest.raises(SystemExit):
        cli.cli.main([], prog_name="importctl")
    assert "plain,forget" in out.getvalue().decode().splitlines()


def test_confirm_missing_text_json_and_nothing_held(run: Callable[..., Run]) -> None:
    ctl = run({"confirm_missing": {"root": "films", "confirmed": 1500}})
    assert ctl("confirm-missing", "films") == (0, "films: 1500 files marked missing\n", "")
    code, out, _ = ctl("confirm-missing", "films", "--json")
    assert code == 0 and json.loads(out) == {"root": "films", "confirmed": 1500}
    assert ctl.client.calls[-1] == ("confirm_missing", ("films",))
    message = "nothing is held for root 'films' (`importctl status` shows which roots are held)"
    nothing = run({"confirm_missing": DaemonError(ErrorCode.NOT_FOUND, message)})
    assert nothing("confirm-missing", "films") == (1, "", f"importctl: not_found: {message}\n")
    assert nothing("confirm-missing")[0] == 2


def test_a_held_root_shows_its_count(run: Callable[..., Run]) -> None:
    held = {**STATUS, "roots": [{**STATUS["roots"][0], "state": "held", "held": 12}]}  # type: ignore[dict-item]
    _, out, _ = run({"status": held})("status")
    assert "films            held" in out and "(12 held)" in out
