"""Bad configuration is refused at the door: `importd check-config` and `importd run` both exit 78
with one line naming the file, the key and the problem, for every value that would parse and then
never work (issue 20)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, wait_for


def importd(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "importd"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def base(tmp_path: Path) -> str:
    return (
        f'state_dir = "{tmp_path / "state"}"\n[control]\nsocket = "{tmp_path / "run" / "c.sock"}"\n'
        f'[catalog]\nurl = "sqlite:///{tmp_path / "state" / "catalog.db"}"\n'
    )


def root(name: str, path: Path, extra: str = "") -> str:
    return f'\n[[roots]]\nname = "{name}"\npath = "{path}"\n{extra}'


def cases(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(id, the config's text, the key named, a word of the problem)."""
    tree = tmp / "tree"
    (tree / "sub").mkdir(parents=True)
    (tmp / "other").mkdir()
    (tmp / "link").symlink_to(tree)
    (tmp / "afile").write_bytes(b"x")
    ok = root("a", tree)
    found = []
    for key, value in (
        ("settle_seconds", "nan"),
        ("settle_seconds", "inf"),
        ("settle_seconds", "-inf"),
        ("settle_seconds", "1e300"),
        ("reconcile_interval_seconds", "nan"),
        ("reconcile_interval_seconds", "1e300"),
        ("hash_workers", "100000"),
        ("hash_workers", "inf"),
    ):
        problem = "finite" if "n" in value else "at most"
        found.append((f"{key}={value}", f"{key} = {value}\n{base(tmp)}{ok}", key, problem))
    for section, key, value in (
        ("safety", "max_vanish_percent", "nan"),
        ("safety", "max_vanish_files", "inf"),
        ("media", "timeout_seconds", "1e300"),
        ("media", "workers", "100000"),
        ("faces", "min_score", "nan"),
    ):
        text = f"{base(tmp)}[{section}]\n{key} = {value}\n{ok}"
        problem = "finite" if "n" in value else "at most"
        found.append((f"{section}.{key}={value}", text, f"{section}.{key}", problem))
    found += [
        (
            "poll-interval-inf",
            base(tmp) + root("a", tree, "poll_interval_seconds = inf\n"),
            "roots[0].poll_interval_seconds",
            "finite",
        ),
        ("empty-file", "", "roots", "no roots"),
        ("no-roots", base(tmp), "roots", "no roots"),
        ("roots-empty-array", f"roots = []\n{base(tmp)}", "roots", "no roots"),
        ("symlink-overlap", base(tmp) + ok + root("b", tmp / "link"), "roots[1].path", "overlaps root 'a'"),
        ("symlink-inside", base(tmp) + ok + root("b", tmp / "link" / "sub"), "roots[1].path", "overlaps"),
        (
            "state-dir-a-file",
            base(tmp).replace(str(tmp / "state") + '"', str(tmp / "afile") + '"') + ok,
            "state_dir",
            "not a directory",
        ),
        ("root-missing", base(tmp) + root("a", tmp / "nowhere"), "roots[0].path", "does not exist"),
        ("root-a-file", base(tmp) + root("a", tmp / "afile"), "roots[0].path", "not a directory"),
        (
            "root-a-file-with-marker",
            base(tmp) + root("a", tmp / "afile", 'marker = ".m"\n'),
            "roots[0].path",
            "not a directory",
        ),
    ]
    return found


@pytest.mark.catalog_free
def test_every_bad_config_is_refused_by_check_config_and_run(tmp_path: Path) -> None:
    runs = []
    for name, text, key, problem in cases(tmp_path):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(text, encoding="utf-8")
        for command in ("check-config", "run"):
            runs.append((name, command, cfg, key, problem, importd(command, "--config", str(cfg))))
    for name, command, cfg, key, problem, proc in runs:
        out, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode == 78, (name, command, proc.returncode, text)
        assert out == b"" and text.count("\n") == 1 and "Traceback" not in text, (name, command, text)
        assert text.startswith(f"importd: config error: {cfg}: {key}: "), (name, command, text)
        assert problem in text, (name, command, text)
    assert not (tmp_path / "run" / "c.sock").exists(), "no daemon came up"


@pytest.mark.catalog_free
def test_a_share_not_mounted_yet_with_a_marker_is_allowed_with_a_warning(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    share = tmp_path / "nas"  # not there yet: mounted later, marker and all
    cfg.write_text(base(tmp_path) + root("nas", share, 'marker = ".importd-online"\n'), encoding="utf-8")
    proc = importd("check-config", "--config", str(cfg))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"ok, 1 root(s)" in out
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"importd: warning: {cfg}: roots[0].path: ")
    assert "not mounted yet" in lines[0] and ".importd-online" in lines[0]


def test_reload_keeps_the_running_config_when_the_new_one_cannot_run(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon()
    d.start()
    d.write_config("")  # no roots at all
    assert d.proc is not None
    d.proc.send_signal(1)
    wait_for(lambda: "reload failed" in d.log_text(), what="reload refused")
    assert "roots: no roots configured" in d.log_text()
    assert [r["name"] for r in d.status()["roots"]] == ["legacy"]
    d.settle = "nan"  # type: ignore[assignment]
    d.write_config()
    d.proc.send_signal(1)
    wait_for(lambda: "settle_seconds: must be" in d.log_text(), what="reload refused")
    assert d.status()["roots"][0]["name"] == "legacy"
