"""`importctl --version`: importctl's version, and importd's when it answers; exit 0 either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from importctl import __version__, cli
from importctl.client import ClientError, DaemonError, DaemonUnreachable
from importctl.protocol import ErrorCode


class StatusOnly:
    """A client that answers `status` with `reply` (or raises it)."""

    def __init__(self, socket: Path | None, reply: dict[str, Any] | ClientError) -> None:
        self.socket_path = socket or Path("/run/importd/control.sock")
        self.reply = reply
        self.daemon_version: str | None = None
        self.calls = 0

    def status(self) -> dict[str, Any]:
        self.calls += 1
        if isinstance(self.reply, ClientError):
            raise self.reply
        self.daemon_version = self.reply["version"]
        return self.reply


def version(
    monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any] | ClientError, *args: str
) -> tuple[int, str, str, list[StatusOnly]]:
    made: list[StatusOnly] = []

    def client(socket: Path | None, timeout: float) -> StatusOnly:
        made.append(StatusOnly(socket, reply))
        return made[-1]

    monkeypatch.setattr(cli, "Client", client)
    with CliRunner().isolation() as (out, err, _):
        code = cli.main([*args, "--version"])
    return code, out.getvalue().decode(), err.getvalue().decode(), made


def test_both_versions_when_the_daemon_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err, _ = version(monkeypatch, {"version": __version__, "pid": 4242})
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"importctl {__version__}",
        f"importd {__version__} (pid 4242, /run/importd/control.sock)",
    ]


def test_a_different_daemon_version_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err, _ = version(monkeypatch, {"version": "9.9.9", "pid": 7})
    assert code == 0
    assert out.splitlines()[1] == (
        "importd 9.9.9 (pid 7, /run/importd/control.sock; differs from importctl: upgrade both together)"
    )
    assert err == "", "no second warning on stderr: the line says it"


def test_an_unreachable_daemon_still_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = DaemonUnreachable("no control socket at /run/importd/control.sock; is importd running?")
    code, out, err, _ = version(monkeypatch, gone)
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"importctl {__version__}",
        "importd: unreachable (no control socket at /run/importd/control.sock; is importd running?)",
    ]


def test_a_daemon_error_is_shown_with_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _, _ = version(monkeypatch, DaemonError(ErrorCode.BUSY, "starting"))
    assert code == 0
    assert out.splitlines()[1] == "importd: unreachable (busy: starting)"


def test_the_socket_option_is_honoured_whatever_its_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    socket = tmp_path / "other.sock"
    code, out, _, made = version(monkeypatch, {"version": __version__, "pid": 1}, "--socket", str(socket))
    assert code == 0 and made[0].socket_path == socket and made[0].calls == 1
    assert str(socket) in out


def test_a_command_is_still_required_without_version() -> None:
    with CliRunner().isolation() as (_, err, _):
        code = cli.main(["--timeout", "1"])
    assert code == 2
    assert "Missing command." in err.getvalue().decode()
