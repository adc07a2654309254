"""`importctl --version` against a real daemon over its real socket, and with none behind it."""

from __future__ import annotations

from importctl import __version__


def test_version_names_the_running_daemon(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    assert d.proc is not None
    done = d.ctl("--version", check=True)
    assert done.stdout.decode().splitlines() == [
        f"importctl {__version__}",
        f"importd {__version__} (pid {d.proc.pid}, {d.socket})",
    ]
    assert done.stderr == b""
    d.stop()
    gone = d.ctl("--version")
    assert gone.returncode == 0
    lines = gone.stdout.decode().splitlines()
    assert lines[0] == f"importctl {__version__}"
    assert lines[1].startswith(f"importd: unreachable (no control socket at {d.socket}")
