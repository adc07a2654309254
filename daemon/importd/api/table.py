"""The daemon's API: one table from method to handler. Each handler validates what the
protocol's parameter table cannot (paths, roots, ranges), then asks the core; the server loop
(`api/server.py`) calls it with the core and the request's params."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from importctl.protocol import Method
from importd.api import (
    csv_import,
    drift,
    enrich,
    entities,
    entity_views,
    export,
    files,
    holds,
    legacy,
    maintenance,
    media,
    preview,
    report,
)
from importd.api.server import Params
from importd.core import Core

Handler = Callable[[Core, Params], Awaitable[object]]

TABLE: dict[str, Handler] = {
    Method.STATUS: files.status,
    Method.SCAN: files.scan,
    Method.SCAN_PROGRESS: files.scan_progress,
    Method.FIND: files.find,
    Method.ERRORS: files.errors,
    Method.GAPS: entities.gaps,
    Method.UNMATCHED: entities.unmatched,
    Method.CONFLICTS: entities.conflicts,
    Method.RESOLVE: entities.resolve,
    Method.RUNS: entities.runs,
    Method.RUN: entities.run,
    Method.CANCEL: entities.cancel,
    Method.DUPES: media.dupes,
    Method.INFO: media.info,
    Method.REPAIR_LINKS: maintenance.repair_links,
    Method.APPLY_LINKS: maintenance.apply_links,
    Method.TRASH: maintenance.trash,
    Method.RESTORE: maintenance.restore,
    Method.CHECK: maintenance.check,
    Method.CHECK_RESULT: maintenance.check_result,
    Method.FORGET: files.forget,
    Method.CONFIRM_MISSING: holds.confirm_missing,
    Method.ENTITIES: entity_views.entities,
    Method.ENTITY: entity_views.entity,
    Method.PREVIEW: preview.preview,
    Method.MIGRATE_LEGACY: legacy.migrate_legacy,
    Method.PAUSE: legacy.pause,
    Method.RESUME: legacy.resume,
    Method.TAGS: legacy.tags,
    Method.IMPORT_CSV: csv_import.import_csv,
    Method.IMPORT_PROGRESS: csv_import.import_progress,
    Method.DRIFT: drift.drift,
    Method.EXPORT: export.export,
    Method.BACKUP: export.backup,
    Method.STREAM_NEXT: export.stream_next,
    Method.REPORT: report.report,
    Method.ENRICH: enrich.enrich,
    Method.ENRICH_PROGRESS: enrich.enrich_progress,
    Method.PENDING: enrich.pending,
    Method.VALIDATE: enrich.validate,
    Method.UNAPPLY: enrich.unapply,
}

# The methods that change files under a root; `[control] write_group` may keep them to a group.
WRITES_UNDER_ROOTS: frozenset[str] = frozenset({Method.APPLY_LINKS, Method.RESTORE})
