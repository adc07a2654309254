"""Deletions on their way to the catalog: the watcher's (and the settle and hash stages') "this
file is gone" are gathered per root into bursts (`importd.brake.BurstWindow`: events less than
0.3 s apart, at most 3 s) and handed to the writer a burst at a time, so the brake judges a mass
deletion as one event, not as a thousand single ones. Also logs what the brake holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from importd.brake import BurstWindow
from importd.catalog.writer import BatchResult, CatalogWriter
from importd.items import CatalogOp, FileRef, Vanished
from importd.pipeline.roots import Roots, RootState

log = logging.getLogger("importd.pipeline")


class GoneBursts:
    def __init__(
        self,
        roots: Roots,
        writer: CatalogWriter,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (wall time) stamps when a file was seen gone, to compare with its row's
        last_seen; `timer` (monotonic) times the burst window, which a wall-clock jump must not
        stretch or cut."""
        self._roots = roots
        self._writer = writer
        self._clock = clock
        self._timer = timer
        self._window: BurstWindow[int, Vanished] = BurstWindow()
        self._wake = anyio.Event()
        self._held: dict[int, int] = {}  # rows held per root, as last logged

    def __len__(self) -> int:
        return len(self._window)

    def add(self, state: RootState, relpath: bytes, subtree: bool) -> None:
        gone = Vanished(FileRef(state.root_id, state.name, relpath), subtree, self._clock())
        self._window.add(state.root_id, gone, self._timer())
        self._wake.set()

    async def run(self) -> None:
        while True:
            deadline = self._window.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._timer())
            with anyio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = anyio.Event()
            for root_id, gone in self._window.due(self._timer()):
                state = self._roots.get(root_id)
                # Offline comes first: a root whose mount went away meanwhile lost nothing (the
                # reconcile when it is back sees what really went).
                if state is not None and self._roots.check_online(state):
                    ops: list[CatalogOp] = list(gone)
                    await self._writer.put_many(ops)

    def held_changed(self, result: BatchResult) -> None:
        """A writer subscriber: journald hears of every hold, and of its end."""
        for root_id, n in result.held.items():
            before = self._held.get(root_id, 0)
            if n == before:
                continue
            state = self._roots.get(root_id)
            name = state.name if state is not None else f"#{root_id}"
            if n:
                self._held[root_id] = n
            else:
                self._held.pop(root_id, None)
            if n > before:
                log.warning(
                    "%s: %d files vanished at once, more than [safety] allows: held, none marked missing "
                    "(`importctl confirm-missing %s` applies it; putting the files back clears it)",
                    name,
                    n,
                    name,
                    extra={"root": name},
                )
            elif n:
                log.info(
                    "%s: %d held files are back, %d still held", name, before - n, n, extra={"root": name}
                )
            elif result.vanished:
                log.warning("%s: hold confirmed: %d files marked missing", name, before, extra={"root": name})
            else:
                log.info(
                    "%s: the held files are back: hold cleared, nothing changed", name, extra={"root": name}
                )


__all__ = ["GoneBursts"]
