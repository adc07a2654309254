"""This server's heartbeat in the catalog: how `importctl status --site`, from any server that
shares the catalog, tells a daemon that runs from one that stopped or went silent."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable

import anyio

from importd.catalog.hosts import HostBeat, beat, mark_stopped
from importd.catalog.writer import CatalogWriter

log = logging.getLogger("importd.heartbeat")

HEARTBEAT_S = 15.0
# A daemon that missed this many heartbeats is `silent`: stopped by a crash, hung, or cut off
# from the catalog. One missed beat is ordinary (a long transaction ahead of it in the writer).
SILENT_AFTER_BEATS = 3


def host_state(host: HostBeat, now: float) -> str:
    """up | stopped | silent."""
    if host.stopped is not None:
        return "stopped"
    return "up" if now - host.heartbeat <= SILENT_AFTER_BEATS * host.interval else "silent"


async def run_heartbeat(
    writer: CatalogWriter,
    version: str,
    clock: Callable[[], float] = time.time,
    interval: float = HEARTBEAT_S,
) -> None:
    """Beat now (the start), then every `interval`. A beat that fails is logged and the next
    one tries again: the catalog's own trouble shows in `status` already."""
    started = clock()
    pid = os.getpid()
    while True:
        me = HostBeat(writer.host, version, pid, started, clock(), interval, None)
        try:
            await writer.call(functools.partial(beat, me=me))
        except Exception as exc:
            log.warning("heartbeat not recorded: %s: %s", type(exc).__name__, exc)
        await anyio.sleep(interval)


async def record_stop(writer: CatalogWriter, clock: Callable[[], float] = time.time) -> None:
    """A clean stop: `stopped`, not `silent`, on the other servers."""
    at = clock()
    try:
        with anyio.fail_after(5):
            await writer.call(lambda c: mark_stopped(c, writer.host, at))
    except Exception as exc:
        log.warning("could not record the stop in the catalog: %s: %s", type(exc).__name__, exc)
