"""Findings: suggestions, counts, the exit bit mask, the JSON contract and the text report."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from importctl.findings import (
    EXIT_BITS,
    KINDS,
    Finding,
    FindingReport,
    exit_status,
    shell_quote,
)


def report() -> FindingReport:
    return FindingReport(
        [
            Finding("ghost", b"/m/gone.mkv"),
            Finding("ghost", b"/m/gone2.mkv"),
            Finding("broken_link", b"/m/farm/l", "-> ../old: target missing"),
            Finding("hash_mismatch", b"/m/rot.mkv"),
            Finding("error", b"/m/err.mkv"),
        ]
    )


def test_exit_status_is_a_bit_mask() -> None:
    assert dict(EXIT_BITS) == {
        "ghost": 8,
        "orphan": 16,
        "broken_link": 32,
        "hash_mismatch": 64,
        "unreadable": 128,
    }
    assert report().exit_status() == 8 | 32 | 64
    assert exit_status({"error": 3}) == 0  # files in error are reported, not a failure bit
    assert exit_status(dict.fromkeys(KINDS, 1)) == 248
    assert FindingReport([]).exit_status() == 0


def test_exit_bits_never_collide_with_the_shared_exit_codes() -> None:
    # 1 daemon error, 2 usage, 3 unreachable: any finding at all still reads as none of them,
    # and every combination fits an exit status (0-255).
    for mask in range(1, 32):
        status = exit_status({kind: 1 for i, kind in enumerate(EXIT_BITS) if mask >> i & 1})
        assert status & 0b111 == 0 and 8 <= status <= 255
    assert len(set(EXIT_BITS.values())) == len(EXIT_BITS)


def test_json_contract() -> None:
    out = report().to_json(extra={"files_checked": 10})
    assert out["counts"] == {
        "ghost": 2,
        "orphan": 0,
        "broken_link": 1,
        "hash_mismatch": 1,
        "unreadable": 0,
        "error": 1,
    }
    assert out["findings"][0] == {
        "kind": "ghost",
        "path": "/m/gone.mkv",
        "suggestion": "importctl scan /m/gone.mkv",
    }
    assert out["findings"][2]["suggestion"] == "importctl repair-links /m/farm/l"
    assert out["findings"][2]["detail"] == "-> ../old: target missing"
    assert out["files_checked"] == 10
    again = FindingReport.from_json(json.loads(json.dumps(out)))
    assert again.findings == report().findings


def test_json_lines_end_with_the_counts() -> None:
    lines = [json.loads(line) for line in report().json_lines()]
    assert [line.get("kind") for line in lines[:-1]] == [
        "ghost",
        "ghost",
        "broken_link",
        "hash_mismatch",
        "error",
    ]
    assert lines[-1]["counts"]["ghost"] == 2 and lines[-1]["exit_status"] == 104


def test_text_report_is_grouped_by_kind_with_fixes() -> None:
    text = report().text()
    assert text.index("Ghost entries") < text.index("Broken symlinks") < text.index("Hash mismatches")
    assert "Ghost entries: in the catalog, gone from disk (2)" in text
    assert "    fix: importctl repair-links /m/farm/l" in text
    assert "Orphan" not in text
    assert text.rstrip().endswith("2 ghost, 1 broken link, 1 hash mismatch, 1 error; exit status 104")
    assert FindingReport([]).text() == "No inconsistencies found.\n"


def test_odd_names_stay_on_one_line() -> None:
    text = FindingReport([Finding("orphan", b"/m/new\nline \xff")]).text()
    assert "  /m/new\\nline \\xff" in text
    assert "fix: importctl scan $'/m/new\\x0aline \\xff'" in text


def test_unknown_kind_from_json_is_refused() -> None:
    with pytest.raises(ValueError):
        Finding.from_json({"kind": "nope", "path": "/x"})


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "raw", [b"/m/plain.mkv", b"/m/it's here", b"/m/new\nline", b"/m/caf\xe9", b"/m/$(x)\\'\t"]
)
def test_shell_quote_names_exactly_the_file(raw: bytes) -> None:
    out = subprocess.run(
        ["bash", "-c", f"printf %s {shell_quote(raw)}"], capture_output=True, check=True
    ).stdout
    assert out == raw


def test_a_ghost_marked_missing_carries_its_time_and_the_forget_fix_through_json() -> None:
    ghost = Finding("ghost", b"/m/caf\xe9.mkv", "missing since 2026-11-21T08:00:00.412Z", 1_795_248_000.412)
    out = ghost.to_json()
    assert out["missing_since"] == "2026-11-21T08:00:00.412Z"
    assert out["suggestion"] == "restore the file, or importctl forget $'/m/caf\\xe9.mkv'"
    again = Finding.from_json(json.loads(json.dumps(out)))
    assert again.path == ghost.path and again.suggestion == ghost.suggestion
    assert again.missing_since is not None and abs(again.missing_since - 1_795_248_000.412) < 1e-6
    # A file that vanished behind the watcher's back: a rescan settles it, as before.
    assert Finding("ghost", b"/m/x").suggestion == "importctl scan /m/x"
    assert "missing_since" not in Finding("ghost", b"/m/x").to_json()
