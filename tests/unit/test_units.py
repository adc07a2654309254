"""The systemd units in units/: hardened by default, scored by systemd-analyze, paths as the daemon uses.

units/verify.sh is what CI runs; these tests run it too, and check that it fails a softened unit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from importctl.protocol import SYSTEM_SOCKET
from importd.config import SYSTEM_CONFIG, SYSTEM_STATE

UNITS = Path(__file__).resolve().parents[2] / "units"
SERVICES = ("importd.service", "importd-sweep.service")
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: apt-get install systemd)"
)


def directives(name: str) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit, in order (comments and sections left out)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_hardened(name: str) -> None:
    d = directives(name)
    for key, value in {
        "MemoryDenyWriteExecute": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX",
        "SystemCallArchitectures": "native",
        "LockPersonality": "yes",
    }.items():
        assert d.get(key) == [value], f"{name}: {key}={d.get(key)}"
    assert d["SystemCallFilter"][0] == "@system-service"


def test_daemon_unit_keeps_its_dirs_writable_and_the_roots_read_only() -> None:
    d = directives("importd.service")
    assert d["ProtectHome"] == ["read-only"], "a root under /home must stay visible"
    # The daemon's production paths are the unit's directories.
    assert d["RuntimeDirectory"] == ["importd"] and SYSTEM_SOCKET.parent == Path("/run/importd")
    assert d["StateDirectory"] == ["importd"] and Path("/var/lib/importd") == SYSTEM_STATE
    assert d["ConfigurationDirectory"] == ["importd"] and SYSTEM_CONFIG.parent == Path("/etc/importd")
    assert d["LogsDirectory"] == ["importd"]
    # Roots are read-only until an operator's drop-in says otherwise (the unit's comments show how).
    assert "ReadWritePaths" not in d
    text = (UNITS / "importd.service").read_text()
    assert "#   ReadWritePaths=" in text
    # Type=notify and the watchdog survive the sandbox: sd_notify is a Unix datagram.
    assert d["Type"] == ["notify"] and d["WatchdogSec"] == ["30"]


def test_log_dir_follows_logs_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from importd.service import log_dir

    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/importd")
    assert log_dir(tmp_path) == Path("/var/log/importd")


@needs_systemd_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_exposure_is_at_most_two(name: str) -> None:
    assert exposure(UNITS / name) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_verify_script_passes_and_reports_the_scores() -> None:
    result = subprocess.run(["bash", str(UNITS / "verify.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SERVICES:
        assert re.search(rf"^ok   {re.escape(name)}: exposure \d+\.\d \(at most 2\.0\)$", result.stdout, re.M)


@needs_systemd_analyze
def test_verify_script_fails_a_softened_unit(tmp_path: Path) -> None:
    soft = [
        line
        for line in (UNITS / "importd.service").read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "MemoryDeny", "Capability"))
    ]
    for name in ("importd.service", "importd-sweep.service", "importd-sweep.timer"):
        shutil.copy(UNITS / name, tmp_path / name)
    (tmp_path / "importd.service").write_text("\n".join(soft) + "\n")
    result = subprocess.run(
        ["bash", str(UNITS / "verify.sh"), str(tmp_path / "importd.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"FAIL importd.service: exposure \d+\.\d is above 2\.0", result.stderr)
    assert "MemoryDenyWriteExecute=" in result.stderr, "the failure lists what counts against the unit"
