"""`drift [ROOT]`: where the files that hold attribute values (sidecars, NFO files, metadata.json)
and the catalog disagree now. The catalog says which files and what the entities hold
(`catalog/drift.py`); the files are read again here, in a thread, by the same readers the mapper
uses; `entities/drift.py` compares."""

from __future__ import annotations

import os
from dataclasses import replace

import anyio

from importctl.protocol import DriftItem, DriftReply, DriftUnreadable, ErrorCode, iso_utc
from importd.api.server import ApiError, Params
from importd.catalog.drift import EntityHolding, ValueFile, drift_facts
from importd.catalog.models import STATUS_MISSING, STATUS_PRESENT
from importd.core import Core
from importd.entities.drift import DRIFT_KINDS, DriftLine, file_drift, gone_drift
from importd.entities.metadata import MetadataFailure
from importd.entities.sidecars import FILE_ROLES, SidecarFacts, read_facts
from importd.paths import display, wire

# The mapper's limit on a metadata file, for the same reason: these are read whole.
MAX_READ_BYTES = 4 << 20


async def drift(core: Core, params: Params) -> DriftReply:
    roots = core.roots()
    root_id: int | None = None
    wanted = params.get("root")
    if wanted:
        match = [r for r in roots if wanted in (r.name, r.path) or os.fsencode(wanted) == r.raw_path]
        if not match:
            raise ApiError(ErrorCode.NOT_FOUND, f"no root named {wanted!r} (importctl status lists them)")
        root_id = match[0].root_id
    async with core.engine.connect() as conn:
        facts = await conn.run_sync(drift_facts, root_id, FILE_ROLES)
    base = {r.root_id: r.raw_path for r in roots}
    readable = [f for f in facts.files if f.status == STATUS_PRESENT and f.root_id in base]
    readable = [f for f in readable if f.role != "sidecar" or _text_attribute(f, facts.entities) is not None]
    attributes = [_text_attribute(f, facts.entities) for f in readable]
    paths = [base[f.root_id] + b"/" + f.relpath for f in readable]
    read = await anyio.to_thread.run_sync(
        lambda: [_read(f, p, a) for f, p, a in zip(readable, paths, attributes, strict=True)]
    )
    items: list[DriftItem] = []
    unreadable: list[DriftUnreadable] = []
    for f, path, (said, mtime) in zip(readable, paths, read, strict=True):
        f = replace(f, mtime=mtime or f.mtime)
        if isinstance(said, MetadataFailure):
            unreadable.append({"path": wire(path), "reason": said.reason})
            continue
        holding = facts.entities[f.entity_id]
        lines = file_drift(
            said.attributes,
            attributes=holding.attributes,
            sources=holding.sources,
            conflicts=holding.conflicts,
            mtime=f.mtime,
            path=wire(path),
        )
        items.extend(_item(line, f, holding, wire(path)) for line in lines)
    for f in facts.files:
        if f.status != STATUS_MISSING:
            continue
        holding = facts.entities[f.entity_id]
        shown = wire(base[f.root_id] + b"/" + f.relpath) if f.root_id in base else wire(f.relpath)
        lines = gone_drift(holding.attributes, holding.sources, display(f.relpath), shown)
        items.extend(_item(line, f, holding, shown) for line in lines)
    return {
        "root": wanted,
        "items": items,
        "totals": {kind: sum(1 for i in items if i["kind"] == kind) for kind in DRIFT_KINDS},
        "unreadable": unreadable,
    }


def _text_attribute(f: ValueFile, holdings: dict[int, EntityHolding]) -> str | None:
    """A text sidecar fills the attribute its rule names: the one the catalog took from it."""
    if f.role != "sidecar":
        return None
    source = display(f.relpath)
    return next(
        (
            name
            for name, (kind, detail, _) in holdings[f.entity_id].sources.items()
            if kind == "sidecar" and detail == source
        ),
        None,
    )


def _read(
    f: ValueFile, path: bytes, attribute: str | None
) -> tuple[SidecarFacts | MetadataFailure, float | None]:
    """What the file says now, and its mtime now (it may have changed since the catalog saw it)."""
    try:
        with open(path, "rb") as fh:
            mtime = os.fstat(fh.fileno()).st_mtime
            data = fh.read(MAX_READ_BYTES + 1)
    except OSError as exc:
        return MetadataFailure(f"cannot read: {exc.strerror or exc}"), None
    if len(data) > MAX_READ_BYTES:
        return MetadataFailure(f"larger than {MAX_READ_BYTES >> 20} MiB: not read as metadata"), mtime
    name = display(f.relpath.rsplit(b"/", 1)[-1])
    return read_facts(f.role, data, name, attribute), mtime


def _item(line: DriftLine, f: ValueFile, holding: EntityHolding, path: str) -> DriftItem:
    source = holding.sources.get(line.attribute)
    return {
        "kind": line.kind,
        "entity": {"id": holding.id, "type": holding.type, "name": holding.name},
        "attribute": line.attribute,
        "path": path,
        "role": f.role,
        "sidecar": line.said,
        "catalog": line.held,
        "source": {"kind": source[0], "detail": source[1], "at": iso_utc(source[2])} if source else None,
        "sidecar_mtime": iso_utc(f.mtime) if f.mtime else None,
        "conflict": line.conflict,
        "settle": line.settle,
    }
