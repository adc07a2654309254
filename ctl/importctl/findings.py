"""What `importctl check` reports: findings, their suggested fixes, counts and the exit status.

Standard library only and no importd imports, so the client can use the same module to format a
report it received as JSON (`FindingReport.from_json(...).text()`) and to compute the exit code.

Exit status is a bit mask, so a timer's failure says what is wrong. The bits start at 8 so that
they never collide with the exit codes every command shares (1 the daemon answered with an error,
2 usage, 3 daemon unreachable): a script can tell "daemon down" from "ghosts and orphans".
    8 ghost entries    catalog rows whose file is gone
   16 orphan files     on disk but not (or not as they are now) in the catalog: the watcher missed them
   32 broken links     symlinks whose target is gone, loops
   64 hash mismatches  content changed while size and mtime did not (bit rot)
  128 unreadable       files or folders that cannot be read now
Files in error (`error`) are reported and counted but have no bit: the catalog already knows.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from importctl.protocol import display_path, iso_utc

FindingKind = Literal["ghost", "orphan", "broken_link", "hash_mismatch", "unreadable", "error"]
KINDS: tuple[FindingKind, ...] = ("ghost", "orphan", "broken_link", "hash_mismatch", "unreadable", "error")
EXIT_BITS: Mapping[FindingKind, int] = {
    "ghost": 8,
    "orphan": 16,
    "broken_link": 32,
    "hash_mismatch": 64,
    "unreadable": 128,
}
HEADINGS: Mapping[FindingKind, str] = {
    "ghost": "Ghost entries: in the catalog, gone from disk",
    "orphan": "Orphan files: on disk, not in the catalog as they are now",
    "broken_link": "Broken symlinks",
    "hash_mismatch": "Hash mismatches: content changed, size and mtime did not (bit rot?)",
    "unreadable": "Unreadable now",
    "error": "Files in error",
}


def display(raw: bytes) -> str:
    return display_path(raw)


def shell_quote(raw: bytes) -> str:
    """A shell word that names exactly `raw`: plain quoting when the name is printable UTF-8,
    else bash's $'...' with \\xNN for every other byte, so a pasted command hits the right file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return shlex.quote(text)
    out: list[str] = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in "\\'":
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def suggestion_for(kind: FindingKind, path: bytes) -> str:
    q = shell_quote(path)
    if kind == "broken_link":
        return f"importctl repair-links {q}"
    if kind == "hash_mismatch":
        return f"compare with a backup and restore it; `importctl scan {q}` accepts the new content"
    if kind == "unreadable":
        return f"check the disk and permissions (dmesg, ls -l), then importctl scan {q}"
    return f"importctl scan {q}"  # ghost, orphan, error: a rescan brings the catalog up to date


def forget_suggestion(path: bytes) -> str:
    """A row importd itself marked missing: a rescan would change nothing, so either the file
    comes back or the operator settles the row."""
    return f"restore the file, or importctl forget {shell_quote(path)}"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    path: bytes
    detail: str = ""
    # Set on a ghost that is a row marked missing (not a file that vanished behind the watcher's
    # back, which a rescan settles): when it was marked, as a Unix time.
    missing_since: float | None = None

    @property
    def suggestion(self) -> str:
        if self.kind == "ghost" and self.missing_since is not None:
            return forget_suggestion(self.path)
        return suggestion_for(self.kind, self.path)

    def to_json(self) -> dict[str, str]:
        out = {"kind": self.kind, "path": os.fsdecode(self.path), "suggestion": self.suggestion}
        if self.detail:
            out["detail"] = self.detail
        if self.missing_since is not None:
            out["missing_since"] = iso_utc(self.missing_since)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Finding:
        kind = str(obj["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown finding kind {kind!r}")
        since = obj.get("missing_since")
        return cls(
            kind,
            os.fsencode(str(obj["path"])),
            str(obj.get("detail", "")),
            datetime.fromisoformat(str(since)).timestamp() if since else None,
        )


def count(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(KINDS, 0)
    for finding in findings:
        counts[finding.kind] += 1
    return counts


def exit_status(counts: Mapping[str, int]) -> int:
    status = 0
    for kind, bit in EXIT_BITS.items():
        if counts.get(kind, 0):
            status |= bit
    return status


@dataclass
class FindingReport:
    findings: list[Finding]

    def counts(self) -> dict[str, int]:
        return count(self.findings)

    def exit_status(self) -> int:
        return exit_status(self.counts())

    def to_json(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`{"findings": [...], "counts": {...}}`, plus `extra` keys (sweep figures) if given."""
        out: dict[str, Any] = {"findings": [f.to_json() for f in self.findings], "counts": self.counts()}
        if extra:
            out.update(extra)
        return out

    def json_lines(self) -> Iterator[str]:
        """One finding per line, then one line with the counts and the exit status."""
        for finding in self.findings:
            yield json.dumps(finding.to_json(), ensure_ascii=True)
        yield json.dumps({"counts": self.counts(), "exit_status": self.exit_status()})

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FindingReport:
        return cls([Finding.from_json(f) for f in obj.get("findings", [])])

    def text(self) -> str:
        """Grouped by kind, each finding with the command that would fix it, then a summary."""
        if not self.findings:
            return "No inconsistencies found.\n"
        lines: list[str] = []
        counts = self.counts()
        for kind in KINDS:
            group = [f for f in self.findings if f.kind == kind]
            if not group:
                continue
            lines.append(f"{HEADINGS[kind]} ({len(group)})")
            for finding in group:
                detail = f"  ({finding.detail})" if finding.detail else ""
                lines.append(f"  {display(finding.path)}{detail}")
                lines.append(f"    fix: {finding.suggestion}")
            lines.append("")
        summary = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in KINDS if counts[k])
        lines.append(f"{summary}; exit status {self.exit_status()}")
        return "\n".join(lines) + "\n"
