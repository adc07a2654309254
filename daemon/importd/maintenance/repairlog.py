"""The repair log: one line per change to a link, in `repair-YYYY-MM-DD.log` under the log dir.

A line is tab-separated key=value fields, always in this order:

    time=2024-05-01T03:12:45.120+00:00  action=repair  link=/srv/a/l  old=../x  new=../y  who=alice  note=

`new` is the new target (repair), the trash path (trash) or the restored path (restore). Values
are escaped so one action stays one line whatever a name holds: backslash as \\\\, tab, newline,
carriage return as \\t \\n \\r, other control or line-breaking characters and bytes that are not
UTF-8 as \\xNN. `unescape` gives the exact bytes back. The console and journald get `summary()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Literal

from importd.maintenance.links import LinkProposal, RepairResult
from importd.maintenance.stamps import day, iso
from importd.maintenance.trash import TrashRecord
from importd.paths import display
from importd.pipeline.reconcile import describe_os_error

LogAction = Literal["repair", "trash", "restore", "skip", "failed"]
FIELDS = ("time", "action", "link", "old", "new", "who", "note")

_NAMED = {ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"}
# Characters str.splitlines (and some terminals) take as line breaks, beyond the C0 controls.
_BREAKS = {0x85, 0x2028, 0x2029}
_UNNAMED = {"\\": b"\\", "n": b"\n", "t": b"\t", "r": b"\r"}


def escape(raw: bytes) -> str:
    out: list[str] = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if code in _NAMED:
            out.append(_NAMED[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 32 or code == 127 or (0x80 <= code < 0xA0) or code in _BREAKS:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> bytes:
    """The exact bytes `escape` was given; ValueError on text it did not write."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
        elif text[i + 1 : i + 2] == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif text[i + 1 : i + 2] in _UNNAMED:
            out += _UNNAMED[text[i + 1]]
            i += 2
        else:
            raise ValueError(f"bad escape at {i}")
    return bytes(out)


def _text_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that never came from a byte
        return text.encode("utf-8", "backslashreplace")


def parse_line(line: str) -> dict[str, bytes]:
    """Fields of one log line, unescaped."""
    fields: dict[str, bytes] = {}
    for part in line.rstrip("\n").split("\t"):
        key, _, value = part.partition("=")
        fields[key] = unescape(value)
    return fields


@dataclass(frozen=True, slots=True)
class RepairLogEntry:
    when: float
    action: LogAction
    link: bytes
    old_target: bytes
    new: bytes
    who: str
    note: str = ""

    def line(self, tz: tzinfo = UTC) -> str:
        values = (
            iso(self.when, tz),
            self.action,
            escape(self.link),
            escape(self.old_target),
            escape(self.new),
            escape(_text_bytes(self.who)),
            escape(_text_bytes(self.note)),
        )
        return "\t".join(f"{k}={v}" for k, v in zip(FIELDS, values, strict=True))

    def summary(self) -> str:
        """One readable sentence for the console and journald."""
        link, old, new = display(self.link), display(self.old_target), display(self.new)
        by = f" (confirmed by {self.who})" if self.who else ""
        note = f": {self.note}" if self.note else ""
        if self.action == "repair":
            return f"repaired {link}: {old} -> {new}{by}"
        if self.action == "trash":
            return f"moved orphan link {link} (-> {old}) to {new}{by}"
        if self.action == "restore":
            return f"restored link {new} (-> {old}) from the trash{by}"
        if self.action == "skip":
            return f"skipped {link} (-> {old}){note}"
        return f"could not change {link} (-> {old}){note}"

    @classmethod
    def repaired(cls, result: RepairResult, now: float, who: str) -> RepairLogEntry:
        return cls(
            now,
            "repair",
            result.link.path,
            result.old_target,
            result.new_target,
            who,
            result.candidate.reason,
        )

    @classmethod
    def trashed(cls, record: TrashRecord) -> RepairLogEntry:
        return cls(record.when, "trash", record.original, record.target, record.trash_path, record.who)

    @classmethod
    def restored(cls, record: TrashRecord, now: float, who: str) -> RepairLogEntry:
        return cls(now, "restore", record.trash_path, record.target, record.original, who)

    @classmethod
    def skipped(cls, proposal: LinkProposal, reason: str, now: float, who: str) -> RepairLogEntry:
        return cls(now, "skip", proposal.link.path, proposal.old_target, b"", who, reason)

    @classmethod
    def failed(cls, link: bytes, old_target: bytes, reason: str, now: float, who: str) -> RepairLogEntry:
        return cls(now, "failed", link, old_target, b"", who, reason)


@dataclass(frozen=True, slots=True)
class LogWritten:
    path: bytes
    line: str


@dataclass(frozen=True, slots=True)
class LogFailure:
    path: bytes
    reason: str


class RepairLog:
    def __init__(self, log_dir: str | bytes | os.PathLike[str], tz: tzinfo = UTC) -> None:
        self.log_dir = os.fsencode(log_dir)
        self.tz = tz

    def path_for(self, now: float) -> bytes:
        return self.log_dir + b"/repair-" + day(now, self.tz).encode() + b".log"

    def append(self, entry: RepairLogEntry) -> LogWritten | LogFailure:
        path = self.path_for(entry.when)
        line = entry.line(self.tz)
        data = (line + "\n").encode("utf-8")  # escape() left only printable text
        try:
            os.makedirs(self.log_dir, mode=0o750, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return LogFailure(path, describe_os_error(exc))
        return LogWritten(path, line)
