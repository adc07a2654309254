"""Handler for `report`: the HTML report, built here and sent whole over the socket.

The daemon builds it because it has the catalog and can read the files (thumbnails need the
pictures); the page travels back in the reply and `importctl` writes FILE, so the file belongs to
whoever asked, wherever they can write, whatever user the service runs as.

The figures are those of the other commands: the roots as `status` shows them, the live gap report
as `gaps` gives it, the groups `dupes` finds, the last sweep's findings as `check` lists them. What
the page draws is capped (groups, members, entities, findings, thumbnails), each section counting
what it left out, so a catalog of 100,000 files gives a page of a few MB in seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import anyio

from importctl.findings import KINDS as FINDING_KINDS
from importctl.protocol import (
    DEFAULT_REPORT_GROUPS,
    MAX_REPORT_GROUPS,
    DupeGroup,
    ErrorCode,
    GapsReply,
    LastSweep,
    ReportReply,
    ReportSection,
    iso_utc,
)
from importd.api import media as api_media
from importd.api.files import status as status_of
from importd.api.server import ApiError, Params
from importd.catalog import report as catalog_report
from importd.catalog.entities import orphan_folders
from importd.catalog.roots import root_paths
from importd.core import Core, RootView
from importd.entities import GapReport
from importd.paths import from_wire, wire
from importd.report import content as rc
from importd.report.html import render, section_counts

log = logging.getLogger("importd.api")

MAX_MEMBERS = 12  # paths drawn per group
MAX_CHECKLIST = 500  # entities with gaps drawn
MAX_ORPHANED = 200
MAX_FINDINGS_PER_KIND = 200
MAX_THUMBNAILS = 400  # pictures and strips embedded, at 3-8 KB each
THUMBNAILS_PER_TASK = 16
THUMBNAIL_BUDGET_S = 60.0  # then the page goes out with the pictures made so far
THUMBNAIL_TASK_TIMEOUT_S = 120.0


async def report(core: Core, params: Params) -> ReportReply:
    began = time.perf_counter()
    cap = params.get("groups", DEFAULT_REPORT_GROUPS)
    if not 1 <= cap <= MAX_REPORT_GROUPS:
        raise ApiError(ErrorCode.INVALID, f"groups must be from 1 to {MAX_REPORT_GROUPS}")
    views = core.roots()
    root = _root(views, params.get("root"))
    status = await status_of(core, {})
    by_name = {view.name: view for view in views}
    async with core.engine.connect() as conn:
        last_runs = await conn.run_sync(catalog_report.last_reconciles)
        reconciled = await conn.run_sync(root_paths)
        in_root = await conn.run_sync(catalog_report.entities_in_root, root.root_id) if root else None
    roots = tuple(
        rc.RootLine(
            name=line["name"],
            path=view.raw_path,
            state=line["state"],
            files=line["files"],
            missing=line["missing"],
            errors=line["errors"],
            watch=line["watch"],
            watch_error=line["watch_error"],
            held=line["held"],
            last_scan=reconciled.get(view.root_id, ("", "", None))[2],
            last_run=last_runs[view.root_id][0] if view.root_id in last_runs else None,
        )
        for line in status["roots"]
        if (view := by_name.get(line["name"])) is not None and (root is None or view.root_id == root.root_id)
    )
    gathered = time.perf_counter()
    gaps, gap_totals = await _gaps(core, in_root)
    grouped = time.perf_counter()
    sections, jobs = await _dupes(core, views, root, cap)
    pictured = time.perf_counter()
    thumbs, wanted = await _thumbnails(core, jobs)
    drawn = time.perf_counter()
    dupes = tuple(_with_thumbnails(s, thumbs) for s in sections)
    content = rc.ReportContent(
        generated=time.time(),
        version=core.version,
        catalog=core.catalog,
        root=root.name if root else None,
        roots=roots,
        gaps=gaps,
        gaps_totals=gap_totals,
        dupes=dupes,
        integrity=await _integrity(core, status["maintenance"]["last_sweep"], root),
        thumbnails=(len(thumbs), wanted),
        notes=(
            (f"{wanted - len(thumbs):,} of {wanted:,} previews could not be made (or not in time).",)
            if len(thumbs) < wanted
            else ()
        ),
    )
    page = render(content)
    counts = section_counts(content)
    log.info(
        "report: status and roots %.3fs, gaps %.3fs, duplicates %.3fs, %d pictures %.3fs, page %.3fs",
        gathered - began,
        grouped - gathered,
        pictured - grouped,
        len(thumbs),
        drawn - pictured,
        time.perf_counter() - drawn,
    )
    return {
        "html": page,
        "bytes": len(page.encode("utf-8", "surrogateescape")),
        "root": content.root,
        "generated": iso_utc(content.generated),
        "seconds": round(time.perf_counter() - began, 3),
        "sections": {k: ReportSection(shown=s, total=t) for k, (s, t) in counts.items()},
    }


def _root(views: Sequence[RootView], name: str | None) -> RootView | None:
    if name is None:
        return None
    for view in views:
        if view.name == name:
            return view
    known = ", ".join(v.name for v in views) or "none"
    raise ApiError(ErrorCode.NOT_FOUND, f"no root named {name!r} (roots: {known})")


async def _gaps(core: Core, in_root: set[tuple[str, str]] | None) -> tuple[GapsReply, dict[str, int]]:
    """`importctl gaps`' report (narrowed to the root's entities), its lists capped."""
    live = core.gap_report()
    if in_root is not None:
        live = GapReport(tuple(e for e in live.entities if (e.type, e.key) in in_root))
    out = cast(GapsReply, live.to_json())
    totals = {"entities": len(out["entities"]), "orphaned": len(out.get("orphaned", []))}
    out["entities"] = out["entities"][:MAX_CHECKLIST]
    shown = out.get("orphaned", [])[:MAX_ORPHANED]
    out["orphaned"] = shown
    refs = [(e.type, e.key) for e in live.orphaned[: len(shown)]]
    if refs:
        async with core.engine.connect() as conn:
            folders = await conn.run_sync(orphan_folders, refs)
        bases = {view.root_id: view.raw_path for view in core.roots()}
        for item, ref in zip(shown, refs, strict=True):
            where = folders.get(ref)
            if where is not None and where[0] in bases and where[1]:
                item["path"] = wire(bases[where[0]] + b"/" + where[1])
    return out, totals


# A thumbnail to make: (content, kind, path, duration); one per content.
Job = tuple[str, str, bytes, float]


async def _dupes(
    core: Core, views: Sequence[RootView], root: RootView | None, cap: int
) -> tuple[list[rc.DupeSection], list[Job]]:
    exact = (await api_media.dupes(core, {"kind": "exact"}))["groups"]
    near = (await api_media.dupes(core, {"kind": "near"}))["groups"]
    if root is not None:
        prefix = wire(root.raw_path + b"/")
        exact = [g for g in exact if any(p.startswith(prefix) for p in g["paths"])]
        near = [g for g in near if any(p.startswith(prefix) for p in g["paths"])]
    wanted = [
        ("dupes_exact", "Exact duplicates", exact),
        ("dupes_near_image", "Near-duplicate pictures", [g for g in near if g.get("media") == "image"]),
        ("dupes_near_video", "Near-duplicate videos", [g for g in near if g.get("media") == "video"]),
    ]
    shown = [g for _, _, groups in wanted for g in groups[:cap]]
    members = [(m["path"], m["blake3"]) for g in shown for m in g["members"][:MAX_MEMBERS]]
    places = {path: _place(views, from_wire(path)) for path, _ in members}
    async with core.engine.connect() as conn:
        found = await conn.run_sync(catalog_report.file_facts, [p for p in places.values() if p is not None])
        facts = await conn.run_sync(catalog_report.media_facts, [d for _, d in members])
    sections: list[rc.DupeSection] = []
    jobs: dict[str, Job] = {}
    for key, title, groups in wanted:
        drawn = []
        for g in groups[:cap]:
            group = _group(g, places, found, facts)
            drawn.append(group)
            firsts = group.members[:1] if group.kind == "exact" else group.members
            for m in firsts:
                kind = group.media if group.media in ("image", "video") else None
                if kind is not None and m.blake3 not in jobs and len(jobs) < MAX_THUMBNAILS:
                    jobs[m.blake3] = (m.blake3, kind, m.path, m.duration_s or 0.0)
        sections.append(rc.DupeSection(key, title, tuple(drawn), len(groups)))
    return sections, list(jobs.values())


def _place(views: Sequence[RootView], path: bytes) -> tuple[int, bytes] | None:
    for view in views:
        if path.startswith(view.raw_path + b"/"):
            return view.root_id, path[len(view.raw_path) + 1 :]
    return None


def _group(
    g: DupeGroup,
    places: dict[str, tuple[int, bytes] | None],
    found: dict[tuple[int, bytes], tuple[int, int]],
    facts: dict[str, dict[str, dict[str, Any]]],
) -> rc.DupeGroup:
    members = []
    for m in g["members"][:MAX_MEMBERS]:
        place = places.get(m["path"])
        size_mtime = found.get(place) if place is not None else None
        known = facts.get(m["blake3"], {})
        image, av = known.get("image"), known.get("av")
        media = image or av or {}
        members.append(
            rc.Member(
                path=from_wire(m["path"]),
                blake3=m["blake3"],
                distance=float(m.get("distance", 0)),
                size=size_mtime[0] if size_mtime else None,
                mtime=size_mtime[1] / 1e9 if size_mtime else None,
                width=media.get("width"),
                height=media.get("height"),
                duration_s=av.get("duration_s") if av else None,
                codec=(image.get("format") if image else av.get("video_codec") if av else None),
            )
        )
    media_kind = g.get("media")
    if media_kind is None:  # an exact group: what its content is, if extraction said
        first = facts.get(g["blake3"], {})
        av = first.get("av") or {}
        media_kind = "image" if "image" in first else "video" if av.get("video_codec") else "other"
    return rc.DupeGroup(g["kind"], media_kind, tuple(members), len(g["paths"]))


class ThumbnailCache:
    """Thumbnails made, by content: a content's picture never changes, so a report made again
    (or narrowed to a root) reuses them. Least recently used first out."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, digest: str) -> bytes | None:
        found = self._items.get(digest)
        if found is not None:
            self._items.move_to_end(digest)
        return found

    def put(self, digest: str, jpeg: bytes) -> None:
        self._items[digest] = jpeg
        self._items.move_to_end(digest)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


THUMBNAILS = ThumbnailCache(4 * MAX_THUMBNAILS)  # at most ~10 MB
STRIP_THREADS = 2  # ffmpeg runs beside the pool's pictures: waiting on a child costs no core


async def _thumbnails(core: Core, jobs: list[Job]) -> tuple[dict[str, bytes], int]:
    """The JPEGs made, by content, and how many were wanted, within `THUMBNAIL_BUDGET_S`.
    Pictures are decoded in the media pool (killed if a decoder hangs), a batch per task; video
    strips are ffmpeg children (killed at their time limit) waited on from threads, meanwhile."""
    pool = core.media.pool
    made = {digest: jpeg for digest, *_ in jobs if (jpeg := THUMBNAILS.get(digest)) is not None}
    todo = [job for job in jobs if job[0] not in made]
    if pool is None or not todo:
        return made, len(jobs)
    from importd.report.thumbnails import thumbnails, video_strip

    def keep(digest: str, jpeg: bytes | None) -> None:
        if jpeg is not None:
            made[digest] = jpeg
            THUMBNAILS.put(digest, jpeg)

    async def pictures(part: list[Job]) -> None:
        result = await pool.run(
            "report",
            thumbnails,
            [(kind, path, duration) for _, kind, path, duration in part],
            timeout=THUMBNAIL_TASK_TIMEOUT_S,
        )
        if isinstance(result, list):
            for (digest, *_), jpeg in zip(part, result, strict=True):
                keep(digest, jpeg)

    threads = anyio.CapacityLimiter(STRIP_THREADS)

    async def strip(job: Job) -> None:
        digest, _, path, duration = job
        jpeg = await anyio.to_thread.run_sync(
            lambda: video_strip(path, duration, in_worker=False), limiter=threads, abandon_on_cancel=True
        )
        keep(digest, jpeg)

    images = [job for job in todo if job[1] == "image"]
    with anyio.move_on_after(THUMBNAIL_BUDGET_S):
        async with anyio.create_task_group() as tg:
            for job in todo:
                if job[1] == "video":
                    tg.start_soon(strip, job)
            for i in range(0, len(images), THUMBNAILS_PER_TASK):
                tg.start_soon(pictures, images[i : i + THUMBNAILS_PER_TASK])
    return made, len(jobs)


def _with_thumbnails(section: rc.DupeSection, thumbs: dict[str, bytes]) -> rc.DupeSection:
    groups = tuple(
        rc.DupeGroup(
            g.kind,
            g.media,
            tuple(_thumbed(m, thumbs) for m in g.members),
            g.paths,
        )
        for g in section.groups
    )
    return rc.DupeSection(section.key, section.title, groups, section.total)


def _thumbed(m: rc.Member, thumbs: dict[str, bytes]) -> rc.Member:
    jpeg = thumbs.get(m.blake3)
    return m if jpeg is None else dataclasses.replace(m, thumbnail=jpeg)


async def _integrity(core: Core, last: LastSweep | None, root: RootView | None) -> rc.Integrity:
    """The last sweep's findings, as `importctl check` lists them, with their fixes."""
    if not last:
        return rc.Integrity(None, None, None, (), {})
    result = await core.maintenance.check_result(last["run_id"])
    findings = [
        rc.Finding(f["kind"], os.fsencode(f["path"]), f["suggestion"], f.get("detail", ""))
        for f in result.get("findings", [])
    ]
    if root is not None:
        findings = [f for f in findings if f.path.startswith(root.raw_path + b"/") or f.path == root.raw_path]
    counts: dict[str, int] = {kind: sum(1 for f in findings if f.kind == kind) for kind in FINDING_KINDS}
    shown = [
        f for kind in FINDING_KINDS for f in [x for x in findings if x.kind == kind][:MAX_FINDINGS_PER_KIND]
    ]
    finished = result.get("finished")
    return rc.Integrity(
        run_id=last["run_id"],
        state=result.get("state"),
        finished=_stamp(finished),
        findings=tuple(shown),
        counts=counts,
    )


def _stamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None
