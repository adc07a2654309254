"""What the HTML report shows, as plain values: gathered by `api/report.py`, drawn by `html.py`.

Nothing here reads the catalog or the disk, so the page can be rendered (and tested) from values
alone. Paths are raw bytes, as the kernel gives them; the page spells them with `paths.display`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RootLine:
    name: str
    path: bytes
    state: str  # watching | polling | offline | scanning | held
    files: int
    missing: int
    errors: int
    watch: str  # inotify | poll
    watch_error: str | None
    held: int
    last_scan: float | None  # when it was last reconciled
    last_run: str | None  # that run's outcome: completed | partial | failed | ...


@dataclass(frozen=True, slots=True)
class Member:
    """One path of a duplicate group, with what is known of its file and content."""

    path: bytes
    blake3: str
    distance: float
    size: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    codec: str | None = None  # a video's codec, or a picture's format
    thumbnail: bytes | None = None  # JPEG: a picture's thumbnail, or a video's strip of keyframes

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass(frozen=True, slots=True)
class Keeper:
    index: int  # into the group's members
    reason: str


@dataclass(frozen=True, slots=True)
class DupeGroup:
    kind: str  # exact | near
    media: str  # image | video | other
    members: tuple[Member, ...]  # at most the report's cap; `paths` counts them all
    paths: int

    @property
    def keeper(self) -> Keeper:
        return choose_keeper(self.members)


@dataclass(frozen=True, slots=True)
class DupeSection:
    key: str  # dupes_exact | dupes_near_image | dupes_near_video
    title: str
    groups: tuple[DupeGroup, ...]  # the first ones, largest first
    total: int  # groups there are


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # ghost | orphan | broken_link | hash_mismatch | unreadable | error
    path: bytes
    fix: str  # the command (or step) that settles it
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Integrity:
    run_id: int | None  # the last sweep; None when none ran
    state: str | None
    finished: float | None
    findings: tuple[Finding, ...]  # the first ones, by kind
    counts: Mapping[str, int]  # per kind, all of them


@dataclass(frozen=True, slots=True)
class ReportContent:
    generated: float
    version: str
    catalog: str
    root: str | None  # the root the report is narrowed to
    roots: tuple[RootLine, ...]
    gaps: Mapping[str, Any]  # `importctl gaps --json`'s shape, narrowed to the root; lists capped
    gaps_totals: Mapping[str, int]  # entities (with gaps) and orphaned there are, before the cap
    dupes: tuple[DupeSection, ...]
    integrity: Integrity
    thumbnails: tuple[int, int] = (0, 0)  # made, wanted
    notes: tuple[str, ...] = field(default=())  # what was left out and why


def choose_keeper(members: Sequence[Member]) -> Keeper:
    """The copy to keep: the largest resolution, then the oldest (modification time), then the
    first by path. The reason names what decided it."""
    if not members:
        return Keeper(0, "")
    order = sorted(
        range(len(members)),
        key=lambda i: (
            -members[i].pixels,
            members[i].mtime if members[i].mtime is not None else float("inf"),
            members[i].path,
        ),
    )
    best = members[order[0]]
    same = [members[i] for i in order[1:] if members[i].pixels == best.pixels]
    size = f"{best.width}×{best.height}"
    if best.pixels and not same:
        return Keeper(order[0], f"largest resolution ({size})")
    if best.pixels and len(same) + 1 < len(members):
        first = f"largest resolution ({size}), then "
    else:
        first = "same resolution; " if best.pixels else ""
    if best.mtime is not None and all(m.mtime is None or m.mtime > best.mtime for m in same):
        return Keeper(order[0], f"{first}oldest (modified {_day(best.mtime)})")
    return Keeper(order[0], f"{first}first by path (same age)")


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
