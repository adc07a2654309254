"""The service in this process: a configuration under a temp dir, and a runner that starts it,
hands it to a test's body and stops it."""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from unittest.mock import patch

import anyio

from importd.config import Config, load_config
from importd.service import Service

T = TypeVar("T")


def config_for(base: Path, roots: dict[str, Path], extra: str = "") -> Config:
    """Config with its catalog, socket and state under `base`; media off (no model loads). The
    IMPORTD_* environment overrides must be unset (the tests that build one unset them)."""
    base.mkdir(parents=True, exist_ok=True)
    source = base / "importd.toml"
    source.write_text(
        encoding="utf-8",
        data=textwrap.dedent(
            f"""\
            settle_seconds = 0.2
            hash_workers = 2
            state_dir = "{base / "state"}"
            [catalog]
            url = "sqlite:///{base / "state" / "catalog.db"}"
            [control]
            socket = "{base / "run" / "control.sock"}"
            [media]
            enabled = false
            """
        )
        + extra
        + "".join(f'\n[[roots]]\nname = "{name}"\npath = "{path}"\n' for name, path in roots.items()),
    )
    return load_config(source)


def run_service(config: Config, body: Callable[[Service], T], ready: Callable[[Service], bool]) -> T:
    """Run the service in this process (the control socket bound, the pipeline started) until
    `ready(service)`, then `body(service)` in a worker thread (the client is blocking), then stop it
    as SIGTERM would, also when the body failed. The runtime tuning is left out: it would freeze
    this process's collector."""

    async def main() -> T:
        service = Service(config)
        stopped = anyio.Event()
        result: list[T] = []
        failure: list[BaseException] = []

        async def serve() -> None:
            try:
                await service.run()
            finally:
                stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            try:
                with anyio.fail_after(60):
                    while not (service.control.sock is not None and ready(service)):
                        await anyio.sleep(0.02)
                result.append(await anyio.to_thread.run_sync(body, service))
            except Exception as exc:
                failure.append(exc)
            finally:
                while not stopped.is_set():  # until run() has its stop scope, stop() does nothing
                    service.stop()
                    with anyio.move_on_after(0.05):
                        await stopped.wait()
        if failure:
            raise failure[0]
        return result[0]

    try:
        with patch("importd.service.tune_runtime", lambda: None):
            return anyio.run(main)
    finally:
        # The daemon leaves its pipeline's memory streams to the process's exit; collected here,
        # in a test process that lives on, they would warn.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def started_up(service: Service) -> bool:
    """Every root's start-up work is over: its first import, and for a watched root the second
    walk behind the watch that follows it (`after-import`), with nothing left to write. Until
    then a root may still show `scanning`."""
    pipeline = service.pipeline
    roots = list(pipeline.roots.by_id.values())
    scans = list(pipeline.scans.by_id.values())
    if len(roots) != len(service.config.roots) or not all(s.done.is_set() for s in scans):
        return False
    for root in roots:
        if root.state not in ("watching", "polling", "offline"):
            return False
        walks = [s for s in scans if s.root_id == root.root_id and not s.prefix]
        behind_watch = root.config.watch != "inotify" or any(s.trigger == "after-import" for s in walks)
        if not walks or not behind_watch:
            return False
    return service.core.queue()["writing"] == 0
