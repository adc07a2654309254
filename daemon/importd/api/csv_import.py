"""`import_csv`: a spreadsheet's rows as entity attributes, previewed or committed as a run; and
`import_progress`, how far an import has read (the CLI shows it on a terminal).

The file is read by the daemon (the client sends its absolute path), streamed in batches of
`BATCH_ROWS`: each batch is read and checked in a worker thread, found among the entities and
planned (a preview: over a read connection), or written in one transaction of the single
writer (a commit), whose gap events then update the live report. Only the reply's row list
(at most `limit` rows) and the keys already seen (to refuse a key given twice) outlive a batch.
"""

from __future__ import annotations

import gc
import json
import os
import pwd
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from importctl.protocol import (
    DEFAULT_IMPORT_ROWS_LIMIT,
    IMPORT_ACTIONS,
    IMPORT_KEY_MODES,
    MAX_IMPORT_ROWS_LIMIT,
    CsvImportReply,
    CsvRow,
    CsvTotals,
    ErrorCode,
    ImportProgressReply,
)
from importd.api.server import ApiError, Params
from importd.catalog.csv_import import CsvBatchOutcome, CsvRowOutcome, csv_batch
from importd.catalog.failures import failure_text
from importd.catalog.runs import finish_run, start_run
from importd.core import Core
from importd.entities import FieldRules
from importd.imports.csv_mapping import (
    BoundColumns,
    CsvImportSpec,
    MappingError,
    ParsedRow,
    SeenKeys,
    bind_columns,
    file_key,
    parse_row,
)
from importd.imports.csv_rows import CsvFormat, CsvReadError, detect_format, read_records
from importd.runtime import release_memory

BATCH_ROWS = 1000
RELEASE_MEMORY_AFTER_ROWS = 20_000  # then the freed heap goes back to the kernel, as after a big walk
_running: dict[str, int] = {}  # job -> rows read
_done: deque[str] = deque(maxlen=256)


async def import_progress(core: Core, params: Params) -> ImportProgressReply:
    job = params["job"]
    if job in _running:
        return {"job": job, "state": "running", "rows": _running[job]}
    return {"job": job, "state": "done" if job in _done else "unknown", "rows": 0}


def _spec(params: Params) -> CsvImportSpec:
    key = params.get("key", "name")
    if key not in IMPORT_KEY_MODES:
        raise ApiError(ErrorCode.INVALID, f"key must be one of {', '.join(IMPORT_KEY_MODES)}, not {key!r}")
    columns: list[tuple[str, str]] = []
    for pair in params["map"]:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p.strip() for p in pair)
        ):
            raise ApiError(ErrorCode.INVALID, f"map: each item is [COLUMN, FIELD], not {pair!r}")
        columns.append((pair[0], pair[1]))
    etype = params["type"].strip()
    if not etype:
        raise ApiError(ErrorCode.INVALID, "an entity type is needed (--type T, or type in the mapping)")
    return CsvImportSpec(
        etype, key, tuple(columns), bool(params.get("create")), bool(params.get("overwrite"))
    )


def _unreadable(path: Path, exc: OSError) -> ApiError:
    if isinstance(exc, FileNotFoundError):
        return ApiError(ErrorCode.NOT_FOUND, f"no file {path} (the daemon reads it: is it on this machine?)")
    if isinstance(exc, PermissionError):
        user = pwd.getpwuid(os.geteuid()).pw_name
        return ApiError(
            ErrorCode.DENIED,
            f"{path}: importd (user {user}) cannot read it (hint: make it readable by that user, "
            "e.g. chmod o+r on the file and o+x on its folders, or copy it somewhere it can read)",
        )
    if isinstance(exc, IsADirectoryError):
        return ApiError(ErrorCode.INVALID, f"{path} is a folder, not a CSV file")
    return ApiError(ErrorCode.INVALID, f"{path}: cannot read: {exc.strerror or exc}")


class _Reader:
    """The worker-thread side: records read, checked, and refused when their key came before."""

    def __init__(
        self,
        records: Iterator[tuple[int, list[str]]],
        cols: BoundColumns,
        spec: CsvImportSpec,
        rules: FieldRules,
    ) -> None:
        self.records = records
        self.cols = cols
        self.spec = spec
        self.rules = rules
        self.seen = SeenKeys()
        self.rows = 0

    def take(self, n: int) -> list[ParsedRow]:
        out: list[ParsedRow] = []
        for row, cells in self.records:
            self.rows += 1
            parsed = parse_row(self.cols, self.rules, self.spec.entity_type, row, cells)
            key = file_key(self.spec.key_mode, parsed.key) if parsed.key else None
            if key is not None:
                first = self.seen.first(key, row)
                if first != row:
                    parsed.errors.append((parsed.key_column, f"duplicate key: row {first} has it already"))
            out.append(parsed)
            if len(out) >= n:
                break
        return out


async def import_csv(core: Core, params: Params) -> CsvImportReply:
    spec = _spec(params)
    path = Path(params["path"])
    if not path.is_absolute():
        raise ApiError(ErrorCode.INVALID, f"the path must be absolute, not {str(path)!r}")
    limit = max(0, min(int(params.get("limit", DEFAULT_IMPORT_ROWS_LIMIT)), MAX_IMPORT_ROWS_LIMIT))
    commit = bool(params.get("commit"))
    job = params.get("job")
    try:
        fmt: CsvFormat = await anyio.to_thread.run_sync(detect_format, path)
        records = read_records(path, fmt)
        first = await anyio.to_thread.run_sync(lambda: next(records, None))
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except CsvReadError as exc:
        raise ApiError(ErrorCode.INVALID, f"{path}: {exc}") from None
    if first is None:
        raise ApiError(ErrorCode.INVALID, f"{path}: the file is empty (no header row)")
    try:
        cols = bind_columns(first[1], spec)
    except MappingError as exc:
        records.close()
        raise ApiError(ErrorCode.INVALID, f"{path.name}: {exc}") from None
    rules = core.field_rules()
    reader = _Reader(records, cols, spec, rules)
    roots = {root.root_id: root.raw_path for root in core.roots()}
    counts = dict.fromkeys(IMPORT_ACTIONS, 0)
    listed: list[CsvRow] = []
    run_id: int | None = None
    if commit:
        started = core.now()
        run_id = await core.write(
            lambda c: start_run(c, core.host, "csv", "manual", None, str(path), started)
        )
    if job:
        _running[job] = 0
    status, detail = "completed", ""
    try:
        while True:
            batch = await anyio.to_thread.run_sync(reader.take, BATCH_ROWS)
            if not batch:
                break
            outcome = await _one_batch(core, batch, spec, rules, roots, path.name, run_id, commit)
            for row in outcome.rows:
                counts[row.action] += 1
                if len(listed) < limit:
                    listed.append(_wire_row(row))
            if job:
                _running[job] += len(batch)
            # Each batch leaves a little cyclic garbage, which the daemon's rare collections
            # (runtime.py) let pile up: the peak then grew with the file (+45 MB from 10,000 to
            # 100,000 rows previewed; +7 MB, the keys seen, with this).
            gc.collect()
    except CsvReadError as exc:
        status, detail = "failed", str(exc)
        raise ApiError(
            ErrorCode.INVALID, f"{path}: {exc} (rows before it were {'applied' if commit else 'read'})"
        ) from None
    except BaseException as exc:
        status, detail = "failed", failure_text(exc)
        raise
    finally:
        records.close()
        if job:
            _running.pop(job, None)
            _done.append(job)
        if reader.rows >= RELEASE_MEMORY_AFTER_ROWS:
            release_memory()
        if run_id is not None:
            await _finish(core, run_id, status, detail, counts, fmt, path)
    warnings = [fmt.warning] if fmt.warning else []
    return {
        "run_id": run_id,
        "committed": commit,
        "totals": _totals(counts),
        "rows": listed,
        "file": str(path),
        "encoding": fmt.encoding,
        "delimiter": fmt.delimiter,
        "warnings": warnings,
    }


def _totals(counts: dict[str, int]) -> CsvTotals:
    return {
        "create": counts["create"],
        "update": counts["update"],
        "unchanged": counts["unchanged"],
        "invalid": counts["invalid"],
        "conflict": counts["conflict"],
        "unmatched": counts["unmatched"],
    }


async def _one_batch(
    core: Core,
    rows: list[ParsedRow],
    spec: CsvImportSpec,
    rules: FieldRules,
    roots: dict[int, bytes],
    source: str,
    run_id: int | None,
    commit: bool,
) -> CsvBatchOutcome:
    now = core.now()
    if not commit:
        async with core.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: csv_batch(
                    c, rows, spec, rules, roots, source=source, now=now, run_id=None, write=False
                )
            )
    outcome = await core.write(
        lambda c: csv_batch(c, rows, spec, rules, roots, source=source, now=now, run_id=run_id, write=True)
    )
    core.apply_gap_events(outcome.events)
    return outcome


async def _finish(
    core: Core, run_id: int, status: str, detail: str, totals: dict[str, int], fmt: CsvFormat, path: Path
) -> None:
    summary = ", ".join(f"{totals[a]} {a}" for a in IMPORT_ACTIONS)
    text = f"{path.name} ({fmt.encoding}, {fmt.delimiter_name}): {summary}"
    if fmt.warning:
        text += f"; {fmt.warning}"
    if detail:
        text += f"; {detail}"
    values: dict[str, Any] = {
        "status": status,
        "finished": core.now(),
        "files_seen": sum(totals.values()),
        "changed": totals["create"] + totals["update"] + totals["conflict"],
        "entities_created": totals["create"],
        "entities_updated": totals["update"],
        "errors": totals["invalid"],
        "detail": text,
        "gap_report": json.dumps(core.gap_report().to_json(), ensure_ascii=True),
    }
    with anyio.CancelScope(shield=True):
        await core.write(lambda c: finish_run(c, run_id, values))


def _wire_row(row: CsvRowOutcome) -> CsvRow:
    return {
        "row": row.row,
        "key": row.key,
        "action": row.action,
        "entity": {"type": row.entity[0], "name": row.entity[1]} if row.entity else None,
        "changes": [{"field": c.field, "current": c.current, "proposed": c.proposed} for c in row.changes],
        "errors": [{"column": column, "message": message} for column, message in row.errors],
    }


__all__ = ["import_csv", "import_progress"]
