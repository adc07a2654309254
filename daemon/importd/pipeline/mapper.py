"""Map: registered files -> entities, metadata files -> attributes, and the live gap report.

Runs after the catalog writer has committed file changes. For each change it asks the root's
rule set what the path means (pure), reads the small metadata files the rules point at (in a
thread), then hands the batch to `catalog.entities.apply_mapping`, which writes entities,
links, conflicts and the run log in one transaction through the single writer; finally it
applies the same facts to the in-memory `LiveGapReport` as events. A moved file keeps its row,
so its link follows it; an entity is matched by (type, key), so a second run over the same tree
updates and never duplicates.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.entities import (
    MappedFile,
    MappingOutcome,
    apply_mapping,
    entity_members,
    live_files_of_root,
    load_states,
    sidecar_files,
)
from importd.catalog.failures import failure_text
from importd.catalog.tables import chunks
from importd.catalog.writer import BatchResult, CatalogWriter, FileChange
from importd.entities import (
    Attributes,
    Expectations,
    ExpectationsChanged,
    GapChange,
    LiveGapReport,
    PathMapping,
    RuleSet,
    id_key,
    read_metadata_json,
)
from importd.entities.sidecars import SIDECAR_ROLES, TARGET_ROLES
from importd.paths import wire
from importd.pipeline.sidecar_index import SidecarIndex

log = logging.getLogger("importd.entities")

READ_ROLES = ("metadata", "sidecar", "table", *SIDECAR_ROLES)
# Kinds of change that bring a media file to a place its sidecars may already be waiting in.
_ARRIVALS = ("new", "moved", "revived")
MAX_METADATA_BYTES = 4 << 20
# Changes mapped in one writer call. Above the writer's bulk batches (8,192 rows, two queued):
# mapping takes its turn in the writer's queue behind them, and with 5,000 a turn it fell behind
# a cold import of a million files (400,000 changes queued here, 500 MB).
MAX_BATCH = 20_000
# Beyond this many present files among the entities a batch moves files out of, no entity is
# followed to a new key (their files just map where they now are): checking each file's old
# place on disk would cost more than it is worth for one batch.
MAX_CARRIED_MEMBERS = 200_000


def read_metadata_file(path: bytes) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if len(data) > MAX_METADATA_BYTES:
        return None, f"larger than {MAX_METADATA_BYTES >> 20} MiB: not read as metadata"
    return data, None


@dataclass
class _Marker:
    done: anyio.Event = field(default_factory=anyio.Event)


class EntityMapper:
    """The stage after registration. `submit` queues committed changes; `drain` waits until
    everything queued before it is mapped; `live` is the gap report, always current."""

    def __init__(
        self,
        engine: AsyncEngine,
        writer: CatalogWriter,
        expectations: Expectations,
        root_paths: Callable[[], Mapping[int, bytes]],
        run_ids: Callable[[], Mapping[int, int | None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.clock = clock
        self.root_paths = root_paths
        self.run_ids = run_ids
        self.rule_sets: dict[int, RuleSet | None] = {}
        self._tagging_roots: set[int] = set()  # roots whose rules have sidecars that tag a video
        self._sidecars = SidecarIndex()
        self.live = LiveGapReport(expectations)
        self.listeners: list[Callable[[list[GapChange]], None]] = []
        self.on_outcome: Callable[[MappingOutcome], None] | None = None
        self._send: MemoryObjectSendStream[list[FileChange] | _Marker]
        self._recv: MemoryObjectReceiveStream[list[FileChange] | _Marker]
        # Unbounded: the writer hands changes over from inside its commit loop, and this stage
        # writes through the same writer, so a bounded queue could deadlock the two.
        self._send, self._recv = anyio.create_memory_object_stream[list[FileChange] | _Marker](math.inf)
        self.pending = 0
        self.last_error: str | None = None

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            states = await conn.run_sync(load_states, self.writer.host)
        self.live = LiveGapReport(self.live.expectations, states)

    def set_rule_sets(self, rule_sets: Mapping[int, RuleSet | None]) -> list[int]:
        """New rule sets (start-up, reload); returns the roots whose files must be mapped again."""
        changed = [
            rid for rid, rs in rule_sets.items() if rid in self.rule_sets and self.rule_sets[rid] != rs
        ]
        self.rule_sets = dict(rule_sets)
        self._tagging_roots = {
            rid for rid, rs in self.rule_sets.items() if rs and any(r.role in TARGET_ROLES for r in rs.rules)
        }
        return changed

    def set_expectations(self, expectations: Expectations) -> None:
        if expectations != self.live.expectations:
            self.emit(self.live.apply(ExpectationsChanged(expectations)))

    async def remap_root(self, root_id: int) -> None:
        async with self.engine.connect() as conn:
            changes = await conn.run_sync(live_files_of_root, root_id)
        for part in chunks(changes, 2000):
            await self.submit(list(part))

    def close(self) -> None:
        """At shutdown: no more changes (`run` ends once it has mapped what was queued)."""
        self._send.close()

    async def committed(self, result: BatchResult) -> None:
        """The writer's listener: what one batch committed."""
        await self.submit(result.changes)

    async def submit(self, changes: list[FileChange]) -> None:
        relevant = [c for c in changes if self.rule_sets.get(c.root_id) is not None]
        if relevant:
            self.pending += len(relevant)
            await self._send.send(relevant)

    async def drain(self) -> None:
        marker = _Marker()
        await self._send.send(marker)
        await marker.done.wait()

    async def run(self) -> None:
        async with self._recv:
            async for item in self._recv:
                if isinstance(item, _Marker):
                    item.done.set()
                    continue
                batch = list(item)
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._recv.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    if isinstance(more, _Marker):
                        await self._process(batch)
                        self.pending -= len(batch)
                        batch = []
                        more.done.set()
                        continue
                    batch.extend(more)
                if batch:
                    await self._process(batch)
                    self.pending -= len(batch)

    async def _process(self, changes: list[FileChange]) -> None:
        items = self._map(changes)
        items.extend(await self._waiting_sidecars(items))
        to_read = [i for i, item in enumerate(items) if item.mapping and item.mapping.role in READ_ROLES]
        if to_read:
            roots = self.root_paths()
            paths = [
                roots.get(items[i].change.root_id, b"") + b"/" + items[i].change.relpath for i in to_read
            ]
            results = await anyio.to_thread.run_sync(lambda: [read_metadata_file(p) for p in paths])
            for i, (data, error) in zip(to_read, results, strict=True):
                item = items[i]
                items[i] = replace(item, content=data, read_error=error)
        items = self._resolve_ids(items)
        carried = await self._fully_carried(items)
        run_ids = dict(self.run_ids())
        try:
            outcome = await self.writer.call(
                lambda c: apply_mapping(c, items, self.clock(), run_ids, carried, self.writer.host)
            )
        except Exception as exc:
            self.last_error = failure_text(exc)
            log.exception("mapping %d file(s) to entities failed", len(items))
            return
        self.last_error = None
        changes_out: list[GapChange] = []
        for event in outcome.events:
            changes_out.extend(self.live.apply(event))
        self.emit(changes_out)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def _waiting_sidecars(self, items: list[MappedFile]) -> list[MappedFile]:
        """Sidecars already catalogued beside media files that arrive now (a small `.tags.json`
        settles before the big video it describes): read again, for the video's tags only."""
        roots = {item.change.root_id for item in items} & self._tagging_roots
        if not roots:
            return []
        for root_id in roots - {r for r in roots if self._sidecars.loaded(r)}:
            async with self.engine.connect() as conn:
                found = await conn.run_sync(sidecar_files, root_id, TARGET_ROLES)
            self._sidecars.load(root_id, found)
        in_batch = {(item.change.root_id, item.change.relpath) for item in items}
        out: dict[int, MappedFile] = {}
        for item in items:
            change, mapping = item.change, item.mapping
            if change.root_id not in roots:
                continue
            if mapping is None:
                self._sidecars.remove(change.file_id)
            elif mapping.role in TARGET_ROLES:
                self._sidecars.add(change.root_id, change.file_id, change.relpath)
            elif change.kind in _ARRIVALS and mapping.role not in READ_ROLES:
                for fid, rel in self._sidecars.describing(change.root_id, change.relpath):
                    sidecar = self._mapping_of(change.root_id, rel)
                    if (
                        (change.root_id, rel) in in_batch
                        or sidecar is None
                        or sidecar.role not in TARGET_ROLES
                    ):
                        continue
                    replay = MappedFile(
                        FileChange(fid, change.root_id, rel, "updated"), sidecar, tags_only=True
                    )
                    out[fid] = replay
        return list(out.values())

    async def _fully_carried(self, items: list[MappedFile]) -> frozenset[int]:
        """The entities whose every present file is on the move: some of them move in this batch
        to a new key, and none of the others is still where its row says. Another file of the
        entity counts as moving when its row already holds a path that maps elsewhere (a later
        batch of the same folder move, committed but not mapped yet) or when its path is gone
        from disk (not committed yet). A file that stays keeps the entity where it is."""
        moved = [
            item.change.file_id
            for item in items
            if item.change.kind == "moved" and item.mapping is not None and item.mapping.key
        ]
        if not moved:
            return frozenset()
        async with self.engine.connect() as conn:
            members = await conn.run_sync(entity_members, moved, MAX_CARRIED_MEMBERS)
        if len(members) > MAX_CARRIED_MEMBERS:
            return frozenset()
        in_batch = {item.change.file_id for item in items}
        owners = {eid for eid, _, _, fid, _, _ in members if fid in in_batch}
        staying: set[int] = set()
        roots = self.root_paths()
        to_stat: list[tuple[int, bytes]] = []
        for eid, etype, key, fid, rid, rel in members:
            if fid in in_batch or eid in staying:
                continue
            mapping = self._mapping_of(rid, rel)
            if mapping is None or (mapping.entity_type, mapping.key) != (etype, key):
                continue  # its row already says it moved: it is on its way
            if rid not in roots:
                staying.add(eid)
                continue
            to_stat.append((eid, roots[rid] + b"/" + rel))
        if to_stat:
            there = await anyio.to_thread.run_sync(lambda: [os.path.lexists(p) for _, p in to_stat])
            staying.update(eid for (eid, _), exists in zip(to_stat, there, strict=True) if exists)
        return frozenset(owners - staying)

    def _mapping_of(self, root_id: int, relpath: bytes) -> PathMapping | None:
        rule_set = self.rule_sets.get(root_id)
        if rule_set is None:
            return None
        mapping = rule_set.map_path(wire(relpath))
        if mapping is not None and mapping.match_key == "path" and mapping.key:
            # Path keys are relative to a root: the same relative path in two roots is two
            # entities.
            mapping = mapping.with_key(f"root{root_id}/{mapping.key}")
        return mapping

    def _map(self, changes: Sequence[FileChange]) -> list[MappedFile]:
        out: list[MappedFile] = []
        for change in changes:
            mapping = None
            if change.kind not in ("vanished", "error", "forgotten", "unforgotten"):
                mapping = self._mapping_of(change.root_id, change.relpath)
            out.append(MappedFile(change, mapping))
        return out

    def _resolve_ids(self, items: list[MappedFile]) -> list[MappedFile]:
        """`match_key = "id"`: the key comes from the id in the entity's metadata.json."""
        if not any(i.mapping and i.mapping.key is None and i.mapping.role != "table" for i in items):
            return items
        roots = self.root_paths()
        out = []
        for item in items:
            m = item.mapping
            if m is None or m.key is not None or m.role == "table":
                out.append(item)
                continue
            scope = os.fsencode(m.scope)
            data, _ = read_metadata_file(
                roots.get(item.change.root_id, b"") + b"/" + scope + b"/metadata.json"
            )
            parsed = read_metadata_json(data) if data is not None else None
            ident = parsed.values.get("id") if isinstance(parsed, Attributes) else None
            key = id_key(ident) if ident not in (None, "") else None
            out.append(replace(item, mapping=m.with_key(key)) if key else item)
        return out

    def emit(self, changes: list[GapChange]) -> None:
        if changes:
            for listener in self.listeners:
                listener(changes)


__all__ = ["EntityMapper"]
