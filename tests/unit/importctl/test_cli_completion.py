"""Shell completion through click's protocol: `_IMPORTCTL_COMPLETE=<shell>_source importctl` prints
the script a shell sources, and that script calls back with `<shell>_complete` and the words typed.
The callbacks never reach the daemon (its socket here leads nowhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from importctl import cli

IMPORTCTL = Path(sys.executable).parent / "importctl"


def importctl(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMPORTCTL)],
        env={**os.environ, "IMPORTD_SOCKET": str(tmp_path / "nobody.sock"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _importctl_completion importctl"),
        ("zsh", "#compdef importctl"),
        ("fish", "complete --no-files --command importctl"),
    ],
)
def test_each_shell_gets_its_script(shell: str, marker: str, tmp_path: Path) -> None:
    done = importctl({"_IMPORTCTL_COMPLETE": f"{shell}_source"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    assert "_IMPORTCTL_COMPLETE" in done.stdout, "the script calls importctl back"
    assert done.stderr == ""


def complete(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main([]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    return out.out.splitlines()


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("importctl sta", "1", "plain,status"),  # a command name
        ("importctl status --j", "2", "plain,--json"),  # a command's option
        ("importctl --soc", "1", "plain,--socket"),  # the group's option
        ("importctl repair-links --dr", "2", "plain,--dry-run"),
    ],
)
def test_bash_completes_commands_and_options(
    words: str, cword: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = complete(
        monkeypatch, capsys, _IMPORTCTL_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=cword
    )
    assert got == [expected]


def test_bash_lists_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = complete(
        monkeypatch, capsys, _IMPORTCTL_COMPLETE="bash_complete", COMP_WORDS="importctl ", COMP_CWORD="1"
    )
    assert {line.split(",", 1)[1] for line in got} == set(cli.cli.commands)


def test_zsh_completes_with_help_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = complete(
        monkeypatch, capsys, _IMPORTCTL_COMPLETE="zsh_complete", COMP_WORDS="importctl sta", COMP_CWORD="1"
    )
    # zsh's protocol: type, value, help, three lines per item.
    assert got == ["plain", "status", "Roots, file counts, queues and throughput."]


def test_fish_completes_with_help_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = complete(
        monkeypatch, capsys, _IMPORTCTL_COMPLETE="fish_complete", COMP_WORDS="importctl sta", COMP_CWORD="sta"
    )
    assert got == ["plain,status\tRoots, file counts, queues and throughput."]


def test_an_unknown_instruction_fails_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("_IMPORTCTL_COMPLETE", "tcsh_source")
    assert cli.main(["status"]) == 1
    assert capsys.readouterr().out == ""


def test_bash_itself_completes_through_the_script(tmp_path: Path) -> None:
    """The real round trip: bash sources the script, and its function fills COMPREPLY."""
    script = (
        'eval "$(_IMPORTCTL_COMPLETE=bash_source importctl)"\n'
        "COMP_WORDS=(importctl sta); COMP_CWORD=1; _importctl_completion importctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
        "COMPREPLY=(); COMP_WORDS=(importctl find --a); COMP_CWORD=2; _importctl_completion importctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env={
            **os.environ,
            "PATH": f"{IMPORTCTL.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "IMPORTD_SOCKET": str(tmp_path / "nobody.sock"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["status", "--all"]
