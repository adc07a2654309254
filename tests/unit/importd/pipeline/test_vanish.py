"""Deletions gathered into bursts per root before the writer (fakes for roots and the writer,
the clock passed in), and the journal lines of holds."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import pytest

from importd.catalog.writer import BatchResult, CatalogWriter
from importd.items import CatalogOp, Vanished
from importd.pipeline.roots import Roots, RootState
from importd.pipeline.vanish import GoneBursts


@dataclass
class FakeState:
    root_id: int
    name: str
    online: bool = True


@dataclass
class FakeRoots:
    states: dict[int, FakeState]

    def get(self, root_id: int) -> FakeState | None:
        return self.states.get(root_id)

    def check_online(self, state: FakeState) -> bool:
        return state.online


@dataclass
class FakeWriter:
    put: list[list[CatalogOp]] = field(default_factory=list)

    async def put_many(self, ops: list[CatalogOp]) -> None:
        self.put.append(ops)


def test_a_root_s_deletions_go_to_the_writer_as_one_burst_and_an_offline_root_s_not_at_all() -> None:
    now = [100.0]
    roots = FakeRoots({1: FakeState(1, "a"), 2: FakeState(2, "b")})
    writer = FakeWriter()
    gone = GoneBursts(
        cast(Roots, roots), cast(CatalogWriter, writer), clock=lambda: now[0], timer=lambda: now[0]
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gone.run)
            gone.add(cast(RootState, roots.states[1]), b"x", False)
            gone.add(cast(RootState, roots.states[1]), b"d", True)
            gone.add(cast(RootState, roots.states[2]), b"y", False)
            assert len(gone) == 3
            await anyio.sleep(0.05)
            assert writer.put == [], "the burst is still open"
            roots.states[2].online = False  # unmounted meanwhile: its deletions are not deletions
            now[0] = 100.5  # b's burst has closed; a's goes on with one more
            gone.add(cast(RootState, roots.states[1]), b"late", False)
            now[0] = 101.0
            with anyio.fail_after(2):
                while len(gone):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()

    anyio.run(main)
    refs = [
        [(cast(Vanished, op).ref.relpath, cast(Vanished, op).subtree) for op in ops] for ops in writer.put
    ]
    assert refs == [[(b"x", False), (b"d", True), (b"late", False)]], "one burst, and nothing of b"
    assert [cast(Vanished, op).at for op in writer.put[0]] == [100.0, 100.0, 100.5]


def test_holds_are_logged_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    roots = FakeRoots({1: FakeState(1, "studio")})
    gone = GoneBursts(cast(Roots, roots), cast(CatalogWriter, FakeWriter()))
    with caplog.at_level(logging.INFO, logger="importd.pipeline"):
        gone.held_changed(BatchResult(held={1: 12}))
        gone.held_changed(BatchResult(held={1: 12}))  # unchanged: nothing
        gone.held_changed(BatchResult(held={1: 5}))
        gone.held_changed(BatchResult(held={1: 0}))
        gone.held_changed(BatchResult(held={1: 30}))
        gone.held_changed(BatchResult(held={1: 0}, vanished=30))
    lines: list[tuple[int, str, Any]] = [
        (r.levelno, r.getMessage(), getattr(r, "root", None)) for r in caplog.records
    ]
    assert [(level, root) for level, _, root in lines] == [
        (logging.WARNING, "studio"),
        (logging.INFO, "studio"),
        (logging.INFO, "studio"),
        (logging.WARNING, "studio"),
        (logging.WARNING, "studio"),
    ]
    assert "12 files vanished at once" in lines[0][1] and "importctl confirm-missing studio" in lines[0][1]
    assert "hold cleared, nothing changed" in lines[2][1]
    assert "hold confirmed: 30 files marked missing" in lines[4][1]
