"""A sweep's raw observations (walk against catalog, links, scrub) turned into findings."""

from __future__ import annotations

import os
from pathlib import Path

from importctl.findings import Finding, FindingReport
from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.items import FileStat, s64
from importd.maintenance.links import LinkClassifier
from importd.maintenance.scrub import ScrubResult, ScrubTarget
from importd.maintenance.sweep import (
    finding_for_link,
    finding_for_scrub,
    findings_from_walk,
    ghosts_from_missing,
)
from importd.pipeline.reconcile import StreamComparer, WalkedLink, walk_listings
from tests.unit.importd.listed_rows import ListedRows

IGNORE = IgnoreRules(DEFAULT_IGNORES)


def known_row(path: Path) -> tuple[bytes, int, int, int, int]:
    st = FileStat.of(os.lstat(path))
    return (os.fsencode(path.name), st.size, st.mtime_ns, s64(st.inode), s64(st.dev))


def test_walk_while_stopped_gives_ghosts_orphans_changes_errors_and_links(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for name in ("kept", "deleted", "changed", "errored"):
        (root / name).write_bytes(b"x")
    known = ListedRows([known_row(root / name) for name in ("kept", "deleted", "changed")], [b"errored"])
    # Behind the daemon's back while it was stopped:
    (root / "deleted").unlink()
    (root / "added").write_bytes(b"new")
    with open(root / "changed", "ab") as fh:
        fh.write(b"more")
    os.symlink("deleted", root / "link")
    os.symlink("kept", root / "good_link")

    raw_root = os.fsencode(str(root))
    comparer = StreamComparer(known, IGNORE, keep_changed=True)
    for listing in walk_listings(raw_root, b"", IGNORE):
        comparer.feed(listing)
    comparer.finish()
    diff = comparer.diff
    findings = findings_from_walk(raw_root, diff)
    classifier = LinkClassifier({"media": raw_root})
    for walked in diff.links:
        assert isinstance(walked, WalkedLink)
        finding = finding_for_link(classifier.classify("media", walked.relpath))
        if finding is not None:
            findings.append(finding)

    got = sorted((f.kind, os.path.basename(f.path)) for f in findings)
    assert got == [
        ("broken_link", b"link"),
        ("error", b"errored"),
        ("ghost", b"deleted"),
        ("orphan", b"added"),
        ("orphan", b"changed"),
    ]
    assert FindingReport(findings).exit_status() == 8 | 16 | 32


def test_scrub_results_map_to_findings() -> None:
    t = ScrubTarget(1, 1, "m", b"f", b"/m/f", 1, 1, 1, 1, "h", None)
    kinds = {
        kind: finding_for_scrub(ScrubResult(t, kind, 0.0, 0, "why"))
        for kind in ("ok", "hash_mismatch", "unreadable", "changed", "missing")
    }
    assert kinds["ok"] is None
    assert kinds["hash_mismatch"] == Finding("hash_mismatch", b"/m/f", "why")
    assert kinds["unreadable"] == Finding("unreadable", b"/m/f", "why")
    assert kinds["missing"] == Finding("ghost", b"/m/f", "why")
    changed = kinds["changed"]
    assert changed is not None and changed.kind == "orphan"


def test_links_that_vanished_since_the_walk_are_not_findings(tmp_path: Path) -> None:
    classifier = LinkClassifier({"media": os.fsencode(str(tmp_path))})
    assert finding_for_link(classifier.classify("media", b"not-there")) is None
    os.symlink("/nonexistent/outside", tmp_path / "out")
    finding = finding_for_link(classifier.classify("media", b"out"))
    assert finding is not None and finding.kind == "broken_link"


def test_rows_marked_missing_are_ghosts_with_their_time_and_the_forget_fix() -> None:
    (ghost,) = ghosts_from_missing(b"/srv/m", [(b"old/gone.mkv", 1_790_000_000.25)])
    assert (ghost.kind, ghost.path, ghost.missing_since) == (
        "ghost",
        b"/srv/m/old/gone.mkv",
        1_790_000_000.25,
    )
    assert ghost.detail == "missing since 2026-09-21T14:13:20.250Z"
    assert ghost.suggestion == "restore the file, or importctl forget /srv/m/old/gone.mkv"
    assert ghost.to_json()["missing_since"] == "2026-09-21T14:13:20.250Z"
    assert FindingReport([ghost]).exit_status() == 8
