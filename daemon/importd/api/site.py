"""Several servers, one catalog: the site as `status --site` shows it, and which server each
root is on (`find`, `dupes`)."""

from __future__ import annotations

from typing import cast

from importctl.protocol import Completeness, FileTotals, HostStatus, SiteRootStatus, SiteStatus, iso_utc
from importd.catalog import files as catalog_files
from importd.catalog.hosts import host_rows
from importd.catalog.models import STATUS_ERROR, STATUS_MISSING, STATUS_PRESENT
from importd.catalog.roots import SiteRoot, site_roots
from importd.core import Core
from importd.heartbeat import host_state


async def roots_by_id(core: Core) -> dict[int, SiteRoot]:
    async with core.engine.connect() as conn:
        return await conn.run_sync(site_roots)


def own_root_ids(core: Core, roots: dict[int, SiteRoot]) -> set[int]:
    """This server's roots, configured now or not (a root dropped from the config keeps its files)."""
    return {rid for rid, root in roots.items() if root.host == core.host}


async def site_status(core: Core) -> SiteStatus:
    async with core.engine.connect() as conn:
        beats = await conn.run_sync(host_rows)
        roots = await conn.run_sync(site_roots)
        counts = await conn.run_sync(catalog_files.status_counts)
    report = await core.recomputed_gap_report(site=True)
    now = core.now()
    totals: FileTotals = {"present": 0, "missing": 0, "error": 0}
    total_bytes = 0
    out_roots: list[SiteRootStatus] = []
    for rid, root in sorted(roots.items(), key=lambda kv: (kv[1].host, kv[1].name)):
        per_root = counts.get(rid, {})
        present, size = per_root.get(STATUS_PRESENT, (0, 0))
        missing = per_root.get(STATUS_MISSING, (0, 0))[0]
        errors = per_root.get(STATUS_ERROR, (0, 0))[0]
        totals["present"] += present
        totals["missing"] += missing
        totals["error"] += errors
        total_bytes += size
        out_roots.append(
            {
                "host": root.host,
                "name": root.name,
                "path": root.path,
                "files": present,
                "missing": missing,
                "errors": errors,
                "bytes": size,
                "last_reconciled": iso_utc(root.last_reconciled),
            }
        )
    names_by_host: dict[str, list[str]] = {}
    for root in roots.values():
        names_by_host.setdefault(root.host, []).append(root.name)
    hosts: list[HostStatus] = [
        {
            "name": b.name,
            "state": host_state(b, now),
            "this": b.name == core.host,
            "heartbeat": iso_utc(b.heartbeat),
            "started": iso_utc(b.started),
            "version": b.version,
            "pid": b.pid,
            "roots": sorted(names_by_host.get(b.name, [])),
        }
        for b in beats
    ]
    return {
        "hosts": hosts,
        "roots": out_roots,
        "files": totals,
        "bytes": total_bytes,
        "completeness": cast(Completeness, report.completeness.to_json()),
    }
