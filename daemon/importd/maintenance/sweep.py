"""What a sweep saw, as findings: the reconcile walk against the catalog, the links, the scrub.

The walk is the pipeline's own (`reconcile.walk_listings` fed to a `StreamComparer`), run without
handing anything on to the pipeline, so the check reports orphans instead of registering them.
"""

from __future__ import annotations

from collections.abc import Sequence

from importctl.findings import Finding
from importctl.protocol import iso_utc
from importd.catalog.models import STATUS_ERROR
from importd.maintenance.links import LinkError, LinkInfo
from importd.maintenance.scrub import ScrubResult
from importd.paths import display, join
from importd.pipeline.reconcile import ReconcileDiff


def findings_from_walk(root_path: bytes, diff: ReconcileDiff) -> list[Finding]:
    """`diff` kept its changed files and what the catalog held for each. Vanished rows are ghosts; new files
    and files changed behind the watcher's back are orphans; rows in error are errors; folders
    the walk could not read are unreadable."""
    out: list[Finding] = []
    for relpath in diff.vanished:
        out.append(Finding("ghost", join(root_path, relpath), "in the catalog, gone from disk"))
    for item in diff.changed:
        status = diff.catalog_status.get(item.relpath)
        path = join(root_path, item.relpath)
        if status is None:
            out.append(Finding("orphan", path, "not in the catalog"))
        elif status == STATUS_ERROR:
            out.append(Finding("error", path, "the catalog holds an error for this file"))
        else:
            out.append(Finding("orphan", path, "changed since it was catalogued"))
    for error in diff.errors:
        out.append(Finding("unreadable", join(root_path, error.relpath), error.reason))
    return out


def ghosts_from_missing(root_path: bytes, rows: Sequence[tuple[bytes, float | None]]) -> list[Finding]:
    """Rows importd itself marked missing (`catalog.maintenance.missing_rows`): ghosts a rescan
    would not settle, so each carries when it went missing and the fix is restore or forget."""
    out: list[Finding] = []
    for relpath, since in rows:
        at = since if since is not None else 0.0
        out.append(Finding("ghost", join(root_path, relpath), f"missing since {iso_utc(at)}", at))
    return out


def finding_for_link(link: LinkInfo | LinkError) -> Finding | None:
    if isinstance(link, LinkError):
        if link.reason in ("gone", "no longer a symlink"):
            return None  # changed since the walk: the next walk sees it as it is
        return Finding("unreadable", link.path, f"symlink: {link.reason}")
    target = display(link.target_as_written)
    if link.state == "broken":
        return Finding("broken_link", link.path, f"-> {target}: target missing")
    if link.state == "loop":
        return Finding("broken_link", link.path, f"-> {target}: link loop")
    if link.state == "outside-roots" and not link.target_exists:
        return Finding("broken_link", link.path, f"-> {target}: target (outside the roots) missing")
    return None


def finding_for_scrub(result: ScrubResult) -> Finding | None:
    path = result.target.path
    if result.kind == "hash_mismatch":
        return Finding("hash_mismatch", path, result.detail)
    if result.kind == "unreadable":
        return Finding("unreadable", path, result.detail)
    if result.kind == "missing":
        return Finding("ghost", path, result.detail)
    if result.kind == "changed":
        return Finding("orphan", path, f"changed since it was hashed: {result.detail}")
    return None
