"""The service: wires catalog, pipeline, event bus and control socket; start, reload (SIGHUP), stop
(SIGTERM). The core state lives in `Pipeline`; this module owns the lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path

import anyio
from anyio import CancelScope

from importctl.protocol import Topic, events_path_for
from importd import __version__
from importd.api.access import WriteAccess
from importd.api.events import EventBus
from importd.api.server import ControlSocket, serve
from importd.api.table import TABLE, WRITES_UNDER_ROOTS
from importd.catalog.engine import create_engine, migrate
from importd.config import Config, ConfigError, check_runnable, load_config
from importd.core import Core
from importd.entities import GapChange
from importd.heartbeat import record_stop, run_heartbeat
from importd.journal import Notifier, run_watchdog
from importd.maintenance.operations import Maintenance
from importd.pipeline.enrichment import Enricher
from importd.pipeline.scans import Scan
from importd.pipeline.watch import NotifyFactory, kernel_inotify
from importd.pipeline.wiring import Pipeline
from importd.runtime import end_stray_tasks, tune_runtime

log = logging.getLogger("importd")
STATUS_EVERY_S = 5.0
EXIT_DEADLINE_S = 8.0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class Service:
    def __init__(self, config: Config, notify_factory: NotifyFactory = kernel_inotify) -> None:
        self.config = config
        self.version = __version__
        self.started_monotonic = time.monotonic()
        self.catalog_display = _redact(config.catalog_url)
        self.engine = create_engine(config.catalog_url)
        self.pipeline = Pipeline(config, self.engine, notify_factory=notify_factory)
        self.control = ControlSocket(config.socket_path)
        self.maintenance = Maintenance(
            self.engine,
            self.pipeline.writer,
            self.pipeline.roots,
            config.state_dir,
            log_dir(config.state_dir),
        )
        self.pipeline.scans.on_links = self.maintenance.record_walk_links
        self.core = Core(
            self.pipeline,
            self.maintenance,
            self.engine,
            version=self.version,
            catalog=self.catalog_display,
            started_monotonic=self.started_monotonic,
        )
        if config.enrich is not None:
            enricher = Enricher(config.enrich, self.core)
            self.core.enricher = enricher
            self.pipeline.writer.subscribe(lambda result: enricher.notice(bool(result.changes)))
        self.events = EventBus()
        _publish_events(self.pipeline, self.events)
        self.notifier = Notifier.from_env()
        self._stop_scope: CancelScope | None = None

    async def run(self) -> None:
        tasks_before = asyncio.all_tasks()
        await migrate(self.engine)
        tune_runtime()
        self.control.bind()  # raises AlreadyRunning before anything else starts
        assert self.control.sock is not None
        self.events.bind(events_path_for(self.config.socket_path))
        log.info(
            "importd %s: catalog %s, control socket %s, %d root(s)",
            self.version,
            self.catalog_display,
            self.config.socket_path,
            len(self.config.roots),
        )
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.pipeline.writer.run)
                async with anyio.create_task_group() as tg:
                    self._stop_scope = tg.cancel_scope
                    tg.start_soon(self._signals)
                    tg.start_soon(run_heartbeat, self.pipeline.writer, self.version)
                    access = WriteAccess(WRITES_UNDER_ROOTS, lambda: self.config.write_group)
                    tg.start_soon(serve, self.control.sock, TABLE, self.core, self.version, access)
                    self.maintenance.bind(tg)
                    await self.pipeline.start(tg)
                    self.notifier.ready()
                    self.notifier.status("reconciling roots")
                    tg.start_soon(run_watchdog, self.notifier)
                    tg.start_soon(self._report_status)
                    if self.core.enricher is not None:
                        tg.start_soon(self.core.enricher.run)
                # Stopping: in-flight hashes are abandoned (their files are picked up by the next
                # start's reconcile); everything already handed to the writer is committed.
                await self.pipeline.shutdown()
                await record_stop(self.pipeline.writer)
                self.pipeline.writer.close()
        finally:
            self.events.close()
            self.control.close()
            await self.engine.dispose()
            await end_stray_tasks(tasks_before)
            log.info("importd stopped")

    def stop(self) -> None:
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("received %s, stopping", signal.Signals(signum).name)
                self.notifier.stopping()
                _exit_if_stuck(EXIT_DEADLINE_S)
                self.pipeline.stopping.set()
                self.stop()
                return

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config.source)
            for warning in check_runnable(new):
                log.warning("%s", warning)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        for what, old_v, new_v in (
            ("control.socket", self.config.socket_path, new.socket_path),
            ("catalog.url", self.config.catalog_url, new.catalog_url),
            ("host", self.config.host, new.host),
        ):
            if old_v != new_v:
                log.warning("%s changed: takes effect after a restart (systemctl restart importd)", what)
        new = dataclasses.replace(
            new,
            socket_path=self.config.socket_path,
            catalog_url=self.config.catalog_url,
            host=self.config.host,
        )
        self.config = new
        if self.core.enricher is not None and new.enrich is not None:
            await self.core.enricher.reconfigure(new.enrich)
        elif (self.core.enricher is None) != (new.enrich is None):
            log.warning("[enrich] turned on or off: takes effect after a restart (systemctl restart importd)")
        self.pipeline.reconfigure(new)
        await self.pipeline.apply_roots(new.roots)
        log.info("configuration reloaded: %d root(s)", len(new.roots))
        self.notifier.ready()

    async def _report_status(self) -> None:
        while True:
            await anyio.sleep(STATUS_EVERY_S)
            q = self.pipeline.queue_sizes()
            counters = self.pipeline.scans.counters
            _, mib = counters.rates(time.time())
            states = ", ".join(f"{s.name}: {s.state}" for s in self.pipeline.roots.by_id.values())
            self.notifier.status(
                f"{states}; settling {q['settling']}, hashing {q['hashing']} ({mib:.1f} MiB/s); "
                f"{counters.hashed_files} hashed since start"
            )


def _publish_events(pipeline: Pipeline, events: EventBus) -> None:
    """What the pipeline's stages announce goes out on the event socket (`importctl watch`)."""
    roots = pipeline.roots

    def run_changed(scan: Scan) -> None:
        state = roots.get(scan.root_id)
        events.publish(Topic.RUN, scan.to_wire(state.name if state else "?"))

    def gaps_changed(changes: list[GapChange]) -> None:
        entities = []
        renamed = [
            {"type": c.rename.type, "old": c.rename.old_name, "new": c.rename.new_name}
            for c in changes
            if c.rename is not None
        ]
        for change in changes[:50]:
            after = change.after or change.before
            if after is None:
                continue
            missing = change.after.missing if change.after else ()
            entities.append(
                {
                    "type": after.type,
                    "name": after.name,
                    "missing": [{"kind": m.kind, "name": m.name} for m in missing],
                }
            )
        completeness = pipeline.mapper.live.completeness().to_json()
        events.publish(Topic.GAPS, {"completeness": completeness, "changed": entities, "renamed": renamed})

    pipeline.writer.subscribe(lambda result: events.publish_changes(result.changes, roots.names()))
    pipeline.scans.listeners.append(run_changed)
    pipeline.mapper.listeners.append(gaps_changed)


def log_dir(state_dir: Path) -> Path:
    """systemd's LogsDirectory= (/var/log/importd) when set, else logs/ in the state dir."""
    logs = os.environ.get("LOGS_DIRECTORY")
    return Path(logs.split(":")[0]) if logs else state_dir / "logs"


def _exit_if_stuck(seconds: float) -> None:
    """Last resort for the promise "SIGTERM exits 0 within 10 s": if a library leaves a task
    that never ends (SQLAlchemy's aiosqlite adapter can, when a connection is torn down during
    cancellation), the interpreter's own shutdown would wait forever. Everything that matters
    is committed before this can fire."""

    def watch() -> None:
        time.sleep(seconds)
        log.error("shutdown did not finish within %.0fs; exiting anyway", seconds)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name="importd-exit-deadline", daemon=True).start()
