"""The daemon side of maintenance: symlink repair proposals and actions, the trash, and
integrity sweeps, wired to the catalog, the single writer and the configured roots.

Nothing here changes a file under a root on its own: repairs and trash moves happen only for
actions an operator confirmed (`importctl repair-links`), each re-checked on disk first and
logged to the console, journald and `repair-YYYY-MM-DD.log`. Sweeps only read, at low CPU and
I/O priority, in a worker thread, and report.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.engine import Connection
from sqlmodel.ext.asyncio.session import AsyncSession

from importctl.findings import Finding, FindingReport
from importctl.protocol import iso_utc
from importd.catalog import maintenance as catalog
from importd.catalog import runs
from importd.catalog.failures import failure_text
from importd.catalog.files import known_rows
from importd.maintenance.links import (
    Candidate,
    LastKnown,
    LinkClassifier,
    LinkError,
    LinkInfo,
    LinkProposal,
    Move,
    RepairFailure,
    apply_repair,
    propose_repair,
    stale_reason,
)
from importd.maintenance.repairlog import RepairLog, RepairLogEntry
from importd.maintenance.scrub import Budget, Scrubber, ScrubPlan, ScrubTarget
from importd.maintenance.sweep import (
    finding_for_link,
    finding_for_scrub,
    findings_from_walk,
    ghosts_from_missing,
)
from importd.maintenance.trash import Trash, TrashFailure
from importd.paths import display, wire
from importd.pipeline.reconcile import ReconcileDiff, StreamComparer, WalkedLink, walk, walk_listings
from importd.pipeline.roots import RootState
from importd.priority import lower_thread_priority
from importd.targets import TargetError, resolve_target

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from importd.catalog.writer import CatalogWriter
    from importd.pipeline.roots import Roots

# How long `status` shows the scrub's figures before counting them again (behind its answer).
SCRUB_STATE_TTL = 60.0

log = logging.getLogger("importd.maintenance")

Scope = list[tuple[int, bytes]]  # (root_id, relpath prefix or b"")


class CatalogCandidates:
    """`CandidateSource` over the catalog, on a synchronous connection."""

    def __init__(self, conn: Connection, roots: Mapping[str, tuple[int, bytes]]) -> None:
        self.conn = conn
        self.roots = roots
        self.paths_by_id = {rid: path for rid, path in roots.values()}
        self._by_name: dict[bytes, list[tuple[bytes, int]]] | None = None

    def _abs(self, root_id: int, relpath: bytes) -> bytes | None:
        base = self.paths_by_id.get(root_id)
        return base + b"/" + relpath if base is not None else None

    def moves_from(self, root_name: str, relpath: bytes) -> Sequence[Move]:
        root = self.roots.get(root_name)
        if root is None:
            return []
        out = []
        for old, at, rid, rel in catalog.moves_under(self.conn, root[0], relpath):
            current = self._abs(rid, rel)
            if current is not None:
                out.append(Move(old, current, at))
        return out

    def last_known(self, root_name: str, relpath: bytes) -> LastKnown | None:
        root = self.roots.get(root_name)
        if root is None:
            return None
        row = catalog.last_known_at(self.conn, root[0], relpath)
        return LastKnown(row[0], row[1]) if row is not None else None

    def by_name_and_size(self, name: bytes, size: int | None) -> Sequence[bytes]:
        if self._by_name is None:
            # One pass over the present files, then every link asks a dict.
            self._by_name = {}
            for rid, rel, sz in catalog.present_files(self.conn, list(self.paths_by_id)):
                path = self._abs(rid, rel)
                if path is not None:
                    self._by_name.setdefault(os.path.basename(rel), []).append((path, sz))
        return [p for p, sz in self._by_name.get(name, []) if size is None or sz == size]

    def by_hash(self, blake3: str) -> Sequence[bytes]:
        found = (
            self._abs(rid, rel)
            for rid, rel in catalog.present_with_hash(self.conn, blake3, list(self.paths_by_id))
        )
        return [p for p in found if p is not None]


def classify_all(
    classifier: LinkClassifier, root_name: str, relpaths: Sequence[bytes]
) -> list[LinkInfo | LinkError]:
    return [classifier.classify(root_name, rel) for rel in relpaths]


def seen_links(links: Sequence[LinkInfo | LinkError]) -> list[catalog.SymlinkSeen]:
    """The links a walk classified, as the catalog records them (errors are not recorded)."""
    return [
        catalog.SymlinkSeen(i.relpath, i.target_as_written, i.resolved, i.state)
        for i in links
        if isinstance(i, LinkInfo)
    ]


@dataclass
class Sweep:
    run_id: int
    scope: Scope
    verify_hash: bool
    budget: Budget
    state: str = "running"  # running | completed | failed | cancelled
    phase: str = "walking"
    files_seen: int = 0
    findings: list[Finding] = field(default_factory=list)
    scrub: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "phase": self.phase,
            "files_seen": self.files_seen,
            "findings": len(self.findings),
            "scrub": self.scrub,
            "message": self.message,
        }


class Maintenance:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: CatalogWriter,
        roots: Roots,
        state_dir: Path,
        log_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.roots = roots
        self.clock = clock
        self.trash = Trash(state_dir)
        self.repair_log = RepairLog(log_dir)
        self.sweeps: dict[int, Sweep] = {}
        self.current: Sweep | None = None
        self._lock = anyio.Lock()  # one repair batch at a time
        self._tg: TaskGroup | None = None
        # The scrub's figures for `status` (a count over every present row: 0.4 s at a million
        # files): kept for SCRUB_STATE_TTL and refreshed behind the answer, anew after a sweep.
        self._scrub_state: tuple[float, dict[str, Any]] | None = None
        self._scrub_refreshing = False

    def bind(self, tg: TaskGroup) -> None:
        """The task group sweeps run in (the service's)."""
        self._tg = tg

    # ----- roots and scopes ------------------------------------------------------------------

    def root_paths(self) -> dict[str, bytes]:
        return {st.config.name: st.raw_path for st in self.roots.by_id.values()}

    def roots_by_name(self) -> dict[str, tuple[int, bytes]]:
        return {st.config.name: (rid, st.raw_path) for rid, st in self.roots.by_id.items()}

    def scope_for(self, target: str | None) -> Scope:
        """All roots, a root by name, or a folder/file by absolute path (ValueError otherwise)."""
        found = resolve_target(target, self.roots.places())
        if isinstance(found, TargetError):
            raise ValueError(found.message)
        return [(place.root_id, place.relpath) for place in found]

    # ----- symlinks --------------------------------------------------------------------------

    def _walk_links(self, scope: Scope) -> list[LinkInfo | LinkError]:
        classifier = LinkClassifier(self.root_paths())
        out: list[LinkInfo | LinkError] = []
        for rid, prefix in scope:
            state = self.roots.get(rid)
            if state is None:
                continue
            for item in walk(state.raw_path, prefix, state.config.ignore):
                if isinstance(item, WalkedLink):
                    out.append(classifier.classify(state.config.name, item.relpath))
        return out

    async def proposals(self, target: str | None) -> list[LinkProposal]:
        scope = self.scope_for(target)
        links = await anyio.to_thread.run_sync(self._walk_links, scope)
        broken = [link for link in links if isinstance(link, LinkInfo) and link.state != "ok"]
        roots = self.roots_by_name()
        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: [propose_repair(link, CatalogCandidates(c, roots)) for link in broken]
            )

    async def apply(self, actions: Sequence[Mapping[str, Any]], who: str) -> list[dict[str, Any]]:
        """Carry out confirmed actions; each is re-proposed and re-checked on disk first."""
        async with self._lock:
            wanted: dict[bytes, Mapping[str, Any]] = {}
            for action in actions:
                wanted[os.fsencode(str(action.get("link", "")))] = action
            current = {p.link.path: p for p in await self._proposals_for(list(wanted))}
            results = []
            for path, action in wanted.items():
                results.append(await self._apply_one(path, action, current.get(path), who))
            return results

    async def _proposals_for(self, paths: list[bytes]) -> list[LinkProposal]:
        classifier = LinkClassifier(self.root_paths())

        def classify() -> list[LinkInfo | LinkError]:
            out: list[LinkInfo | LinkError] = []
            for path in paths:
                located = classifier.locate(path)
                if located is not None:
                    out.append(classifier.classify(*located))
            return out

        links = await anyio.to_thread.run_sync(classify)
        roots = self.roots_by_name()
        infos = [link for link in links if isinstance(link, LinkInfo)]
        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: [propose_repair(i, CatalogCandidates(c, roots)) for i in infos]
            )

    async def _apply_one(
        self, path: bytes, action: Mapping[str, Any], proposal: LinkProposal | None, who: str
    ) -> dict[str, Any]:
        now = self.clock()
        kind = action.get("action")
        base = {"link": wire(path), "action": kind}
        if proposal is None:
            return base | {"status": "stale", "detail": "no longer a symlink under a root"}
        if proposal.link.state == "ok":
            target = display(proposal.link.target_as_written)
            return base | {
                "status": "stale",
                "detail": f"stale: the link works now (-> {target}); left alone",
            }
        if kind == "repair":
            wanted = os.fsencode(str(action.get("candidate", "")))
            chosen = next((c for c in proposal.candidates if c.path == wanted), None)
            if chosen is None:
                chosen = Candidate(wanted, "chosen by the operator") if os.path.lexists(wanted) else None
            if chosen is None:
                return base | {"status": "stale", "detail": "the chosen target is gone"}
            result = await anyio.to_thread.run_sync(lambda: apply_repair(proposal, chosen, recheck=True))
            if isinstance(result, RepairFailure):
                entry = RepairLogEntry.failed(path, proposal.old_target, result.reason, now, who)
                self._log(entry)
                return base | {"status": "stale" if result.stale else "failed", "detail": result.reason}
            self._log(RepairLogEntry.repaired(result, now, who))
            return base | {"status": "done", "new_target": wire(result.new_target), "detail": ""}
        if kind == "trash":
            if proposal.action != "trash":
                return base | {
                    "status": "stale",
                    "detail": f"not an orphan any more ({proposal.action}: {proposal.note})",
                }
            reason = stale_reason(proposal)
            if reason:
                return base | {"status": "stale", "detail": reason}
            link = proposal.link
            root_path = self.root_paths().get(link.root_name)
            if root_path is None:
                return base | {"status": "stale", "detail": "root no longer configured"}
            record = await anyio.to_thread.run_sync(
                lambda: self.trash.move_orphan(
                    link.root_name,
                    root_path,
                    link.relpath,
                    now,
                    who=who,
                    expected_target=link.target_as_written,
                )
            )
            if isinstance(record, TrashFailure):
                self._log(RepairLogEntry.failed(path, proposal.old_target, record.reason, now, who))
                return base | {"status": "failed", "detail": record.reason}
            self._log(RepairLogEntry.trashed(record))
            return base | {
                "status": "done",
                "trash_id": record.id,
                "trash_path": wire(record.trash_path),
                "detail": "",
            }
        return base | {"status": "failed", "detail": f"unknown action {kind!r} (repair or trash)"}

    def _log(self, entry: RepairLogEntry) -> None:
        written = self.repair_log.append(entry)
        level = logging.WARNING if entry.action == "failed" else logging.INFO
        log.log(level, "%s", entry.summary(), extra={"path": entry.link})
        if not hasattr(written, "line"):
            log.error("repair log not written: %s", getattr(written, "reason", written))

    async def restore(self, record_id: int, who: str) -> dict[str, Any]:
        result = await anyio.to_thread.run_sync(lambda: self.trash.restore(record_id, self.clock(), who=who))
        if hasattr(result, "record"):
            self._log(RepairLogEntry.restored(result.record, self.clock(), who))
            return {"id": record_id, "status": "restored", "path": wire(result.record.original)}
        raise ValueError(getattr(result, "reason", "cannot restore"))

    async def record_walk_links(self, root_id: int, relpaths: Sequence[bytes], complete: bool) -> None:
        """Called by reconcile with the links its walk met."""
        state = self.roots.get(root_id)
        if state is None:
            return
        infos = await anyio.to_thread.run_sync(
            classify_all, LinkClassifier(self.root_paths()), state.config.name, relpaths
        )
        await self.writer.call(
            functools.partial(
                catalog.record_links,
                root_id=root_id,
                links=seen_links(infos),
                now=self.clock(),
                complete=complete,
            )
        )

    # ----- sweeps ----------------------------------------------------------------------------

    async def start_check(self, target: str | None, verify_hash: bool, budget: Budget) -> Sweep:
        if self.current is not None and self.current.state == "running":
            raise RuntimeError(f"sweep run {self.current.run_id} is still running")
        scope = self.scope_for(target)
        started = self.clock()
        label = target or None
        run_id = await self.writer.call(
            lambda c: runs.start_run(
                c, self.writer.host, "sweep", "verify-hash" if verify_hash else "check", None, label, started
            )
        )
        sweep = Sweep(run_id, scope, verify_hash, budget)
        self.sweeps[run_id] = sweep
        self.current = sweep
        if self._tg is None:
            raise RuntimeError("maintenance is not started")
        self._tg.start_soon(self._run_sweep, sweep, started)
        return sweep

    def _sweep_walk(self, sweep: Sweep, state: RootState, root_id: int, prefix: bytes) -> ReconcileDiff:
        """A sweep's walk (in a worker thread) against the catalog's rows, read as it goes."""
        lower_thread_priority()
        ignore = state.config.ignore
        known = known_rows(self.engine, root_id, prefix or None)
        try:
            comparer = StreamComparer(known, ignore, keep_changed=True)
            for listing in walk_listings(state.raw_path, prefix, ignore):
                if sweep.stop.is_set():
                    return comparer.diff  # cut short: what it saw so far
                comparer.feed(listing)
                sweep.files_seen = comparer.diff.seen
            comparer.finish()
            return comparer.diff
        finally:
            known.close()

    async def _run_sweep(self, sweep: Sweep, started: float) -> None:
        try:
            for rid, prefix in sweep.scope:
                state = self.roots.get(rid)
                if state is None:
                    continue
                if state.state == "offline":
                    sweep.findings.append(
                        Finding("unreadable", state.raw_path, f"root offline: {state.watch_error}")
                    )
                    continue
                diff = await anyio.to_thread.run_sync(
                    self._sweep_walk, sweep, state, rid, prefix, abandon_on_cancel=True
                )
                link_paths = [link.relpath for link in diff.links]
                sweep.findings.extend(findings_from_walk(state.raw_path, diff))
                async with self.engine.connect() as conn:
                    missing = await conn.run_sync(catalog.missing_rows, rid, prefix or None)
                sweep.findings.extend(ghosts_from_missing(state.raw_path, missing))
                infos = await anyio.to_thread.run_sync(
                    classify_all, LinkClassifier(self.root_paths()), state.config.name, link_paths
                )
                sweep.findings.extend(f for f in (finding_for_link(i) for i in infos) if f is not None)
                await self.writer.call(
                    functools.partial(
                        catalog.record_links,
                        root_id=rid,
                        links=seen_links(infos),
                        now=self.clock(),
                        complete=not prefix,
                    )
                )
            if sweep.verify_hash and not sweep.stop.is_set():
                sweep.phase = "verifying"
                await self._scrub(sweep, started)
            sweep.state = "cancelled" if sweep.stop.is_set() else "completed"
        except Exception as exc:
            sweep.state, sweep.message = "failed", failure_text(exc)
            log.exception("sweep %d failed", sweep.run_id)
        finally:
            sweep.phase = "done"
            report = FindingReport(list(sweep.findings))
            values = {
                "status": sweep.state,
                "finished": self.clock(),
                "files_seen": sweep.files_seen,
                "errors": len(sweep.findings),
                "detail": json.dumps(
                    {"counts": report.counts(), "exit_status": report.exit_status(), "scrub": sweep.scrub}
                ),
            }
            findings = list(sweep.findings)
            with anyio.CancelScope(shield=True):
                await self.writer.call(lambda c: catalog.store_findings(c, sweep.run_id, findings))
                await self.writer.call(lambda c: runs.finish_run(c, sweep.run_id, values))
            self._scrub_state = None  # its verifications count from the next `status` on
            log.info(
                "sweep %d %s: %s",
                sweep.run_id,
                sweep.state,
                ", ".join(f"{n} {k}" for k, n in report.counts().items() if n) or "nothing found",
            )

    async def _scrub(self, sweep: Sweep, started: float) -> None:
        root_ids = [rid for rid, _ in sweep.scope]
        names = {rid: st.config.name for rid, st in self.roots.by_id.items()}
        paths = {rid: st.raw_path for rid, st in self.roots.by_id.items()}
        plan = ScrubPlan(sweep.budget, started)
        scrubber = Scrubber(plan, stop=sweep.stop, now=self.clock)
        prefixes = {rid: prefix for rid, prefix in sweep.scope}
        while not sweep.stop.is_set():
            async with self.engine.connect() as conn:
                rows = await conn.run_sync(catalog.scrub_targets, root_ids, started, 2000)
            targets = [
                ScrubTarget(
                    r["id"],
                    r["root_id"],
                    names.get(r["root_id"], "?"),
                    r["relpath"],
                    paths[r["root_id"]] + b"/" + r["relpath"],
                    r["size"],
                    r["mtime_ns"],
                    r["inode"],
                    r["dev"],
                    r["blake3"],
                    r["last_verified"],
                )
                for r in rows
                if r["root_id"] in paths
                and (not prefixes.get(r["root_id"]) or r["relpath"].startswith(prefixes[r["root_id"]] + b"/"))
            ]
            if not rows:
                break

            def run(batch: list[ScrubTarget] = targets) -> list[Any]:
                lower_thread_priority()
                return list(scrubber.sweep(batch))

            results = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
            # Every verdict is stamped, not only "ok": a rotten file must not stay at the front of
            # the queue and be re-read every night while the rest of the library waits.
            stamps = [(r.target.row_id, r.checked_at) for r in results]
            await self.writer.call(functools.partial(catalog.mark_verified, stamps=stamps))
            sweep.findings.extend(f for f in (finding_for_scrub(r) for r in results) if f is not None)
            p = scrubber.progress
            sweep.scrub = {
                "files": p.files,
                "bytes": p.bytes,
                "seconds": round(p.elapsed, 3),
                "stopped": p.stopped or "done",
                "budget": sweep.budget.describe(),
            }
            if p.stopped is not None or not results:
                break  # budget spent, stopped, or only rows outside the requested folder left
        if not sweep.scrub:
            sweep.scrub = {
                "files": 0,
                "bytes": 0,
                "seconds": 0.0,
                "stopped": "done",
                "budget": sweep.budget.describe(),
            }

    async def check_result(self, run_id: int) -> dict[str, Any]:
        sweep = self.sweeps.get(run_id)
        if sweep is not None and sweep.state == "running":
            return {"run_id": run_id, "state": "running", "progress": sweep.progress()}
        async with AsyncSession(self.engine) as session:
            row, _ = await runs.run_row(session, run_id, 0)
        if row is None or row["kind"] != "sweep":
            raise LookupError(f"no sweep run {run_id}")
        async with self.engine.connect() as conn:
            findings = await conn.run_sync(catalog.load_findings, run_id)
        detail = json.loads(row["detail"] or "{}")
        report = FindingReport(list(findings))
        return report.to_json(
            {
                "run_id": run_id,
                "state": row["status"],
                "started": iso_utc(row["started"]),
                "finished": iso_utc(row["finished"]),
                "files_seen": row["files_seen"],
                "scrub": detail.get("scrub", {}),
                "exit_status": report.exit_status(),
            }
        )

    async def _scrub_figures(self) -> dict[str, Any]:
        cached = self._scrub_state
        if cached is None or self._tg is None:
            return dict(await self._count_scrub_state())
        if time.monotonic() - cached[0] > SCRUB_STATE_TTL and not self._scrub_refreshing:
            self._scrub_refreshing = True
            self._tg.start_soon(self._refresh_scrub_state)
        return dict(cached[1])

    async def _refresh_scrub_state(self) -> None:
        try:
            await self._count_scrub_state()
        finally:
            self._scrub_refreshing = False

    async def _count_scrub_state(self) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            state = await conn.run_sync(catalog.scrub_state)
        self._scrub_state = (time.monotonic(), state)
        return state

    async def status(self) -> dict[str, Any]:
        async with AsyncSession(self.engine) as session:
            last = await runs.last_runs(session, "sweep", 1)
        scrub = await self._scrub_figures()
        async with self.engine.connect() as conn:
            links = await conn.run_sync(catalog.link_counts)
        scrub["oldest_verified"] = iso_utc(scrub["oldest_verified"])
        out: dict[str, Any] = {"links": links, "scrub": scrub, "last_sweep": None}
        if last:
            row = last[0]
            detail = json.loads(row["detail"] or "{}")
            out["last_sweep"] = {
                "run_id": row["id"],
                "state": row["status"],
                "started": iso_utc(row["started"]),
                "finished": iso_utc(row["finished"]),
                "counts": detail.get("counts", {}),
                "exit_status": detail.get("exit_status"),
            }
        if self.current is not None and self.current.state == "running":
            out["running"] = self.current.progress()
        return out


__all__ = ["CatalogCandidates", "Maintenance", "Sweep"]
