"""The repair log: one line per action, lossless for any name, one file per day."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from importd.maintenance.links import Candidate, LinkInfo, LinkProposal, RepairResult
from importd.maintenance.repairlog import (
    LogFailure,
    LogWritten,
    RepairLog,
    RepairLogEntry,
    escape,
    parse_line,
    unescape,
)
from importd.maintenance.trash import TrashRecord

NOW = 1_714_550_400.0  # 2024-05-01 08:00 UTC
NASTY = [
    b"plain",
    b"tab\there",
    b"new\nline",
    b"back\\slash",
    b"caf\xe9",
    b"\xff\xfe",
    b"nel\xc2\x85x",
    b"ls\xe2\x80\xa8x",
]


@pytest.mark.parametrize("raw", NASTY)
def test_escape_is_one_printable_line_and_lossless(raw: bytes) -> None:
    text = escape(raw)
    assert len(text.splitlines()) == 1 and "\t" not in text
    assert text.isprintable()
    assert unescape(text) == raw


def test_unescape_rejects_what_escape_never_writes() -> None:
    with pytest.raises(ValueError):
        unescape("bad\\q")


def link(path: bytes) -> LinkInfo:
    return LinkInfo("media", b"farm/l", path, b"old\ntarget", b"/m/old\ntarget", "broken", "media", b"old")


def test_one_line_per_action_in_a_file_per_day(tmp_path: Path) -> None:
    log = RepairLog(tmp_path / "log")
    result = RepairResult(
        link(b"/m/farm/l\n2"), b"old\ntarget", b"new\ttarget", Candidate(b"/m/new", "moved")
    )
    record = TrashRecord(3, "media", b"x\xff", b"/m/x\xff", b"/state/trash/x\xff", b"gone", NOW + 10, "alice")
    entries = [
        RepairLogEntry.repaired(result, NOW, "alice"),
        RepairLogEntry.trashed(record),
        RepairLogEntry.restored(record, NOW + 20, "bob"),
        RepairLogEntry.skipped(
            LinkProposal(link(b"/m/s"), b"t", [], "skip"), "stale: the link works again", NOW + 30, "bob"
        ),
        RepairLogEntry.failed(b"/m/f", b"t", "cannot replace the link: permission denied", NOW + 40, ""),
    ]
    for entry in entries:
        written = log.append(entry)
        assert isinstance(written, LogWritten)
    path = tmp_path / "log" / "repair-2024-05-01.log"
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 5
    first = parse_line(lines[0])
    assert first == {
        "time": b"2024-05-01T08:00:00.000+00:00",
        "action": b"repair",
        "link": b"/m/farm/l\n2",
        "old": b"old\ntarget",
        "new": b"new\ttarget",
        "who": b"alice",
        "note": b"moved",
    }
    trash_line = parse_line(lines[1])
    assert (trash_line["link"], trash_line["new"]) == (b"/m/x\xff", b"/state/trash/x\xff")
    assert parse_line(lines[2])["new"] == b"/m/x\xff"
    assert parse_line(lines[3])["note"] == b"stale: the link works again"
    # The next day starts a new file.
    log.append(RepairLogEntry.failed(b"/m/f", b"t", "x", NOW + 86400, ""))
    assert (tmp_path / "log" / "repair-2024-05-02.log").exists()


def test_summary_reads_as_a_sentence() -> None:
    result = RepairResult(link(b"/m/farm/l"), b"../old.mkv", b"../new.mkv", Candidate(b"/m/new.mkv", "moved"))
    assert RepairLogEntry.repaired(result, NOW, "alice").summary() == (
        "repaired /m/farm/l: ../old.mkv -> ../new.mkv (confirmed by alice)"
    )
    record = TrashRecord(1, "media", b"l", b"/m/l", b"/s/trash/l", b"gone", NOW, "")
    assert RepairLogEntry.trashed(record).summary() == "moved orphan link /m/l (-> gone) to /s/trash/l"


def test_unwritable_log_dir_is_a_failure_value(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    log = RepairLog(os.fsencode(str(tmp_path / "file")) + b"/log")
    failure = log.append(RepairLogEntry.failed(b"/m/f", b"t", "x", NOW, ""))
    assert isinstance(failure, LogFailure) and failure.reason
