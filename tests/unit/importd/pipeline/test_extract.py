"""The media stage's intake: it takes what the writer committed (as a listener), only queues,
and plans no work for changes that are not media; the pool entry point fails as a value."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from importd.catalog.engine import create_engine, migrate
from importd.catalog.writer import BatchResult, CatalogWriter, FileChange
from importd.config import MediaConfig
from importd.media.faces import FaceSettings
from importd.media.failure import ExtractionFailure
from importd.pipeline.extract import MediaStage, run_extractor

H1 = "1" * 64


async def _with_stage(tmp: Path, config: MediaConfig, body: Callable[[MediaStage], Awaitable[None]]) -> None:
    engine = create_engine(f"sqlite:///{tmp / 'catalog.db'}")
    try:
        await migrate(engine)
        writer = CatalogWriter(engine)
        stage = MediaStage(config, engine, writer, root_paths=lambda: {1: b"/srv/r"})
        try:
            await body(stage)
        finally:
            # Neither the writer nor the stage's tasks ran: close the ends they would have.
            stage.close()
            writer.close()
            for stream in (writer._recv, stage._recv, stage._intake_recv):
                stream.close()
    finally:
        await engine.dispose()


def test_committed_batches_are_queued_only_when_media_is_enabled(tmp_path: Path) -> None:
    result = BatchResult(changes=[FileChange(1, 1, b"a.jpg", "new", H1)])

    async def enabled(stage: MediaStage) -> None:
        stage.committed(result)
        stage.committed(BatchResult())  # nothing committed: nothing queued
        assert stage.status()["intake"] == 1

    async def disabled(stage: MediaStage) -> None:
        stage.committed(result)
        assert stage.status()["intake"] == 0 and stage.status()["enabled"] is False

    anyio.run(_with_stage, tmp_path, MediaConfig(faces_enabled=False), enabled)
    anyio.run(_with_stage, tmp_path, MediaConfig(enabled=False), disabled)


def test_no_work_is_planned_for_what_is_not_media(tmp_path: Path) -> None:
    changes = [
        FileChange(1, 1, b"notes.txt", "new", H1),
        FileChange(2, 1, b"gone.jpg", "vanished", H1),
        FileChange(3, 1, b"bad.jpg", "error"),
        FileChange(4, 9, b"elsewhere.jpg", "new", H1),  # a root no longer configured
    ]

    async def body(stage: MediaStage) -> None:
        from importd.media.pool import Priority

        await stage._plan(changes, Priority.FOREGROUND)
        assert not stage.loaded.is_set(), "the media libraries are loaded for media only"
        assert stage.counters.queued == 0

    anyio.run(_with_stage, tmp_path, MediaConfig(faces_enabled=False), body)


def test_catch_up_on_an_empty_catalog_is_ready_at_once(tmp_path: Path) -> None:
    async def body(stage: MediaStage) -> None:
        await stage._catch_up([])
        assert stage.ready.is_set()

    anyio.run(_with_stage, tmp_path, MediaConfig(faces_enabled=False), body)


def test_an_unknown_extractor_is_a_failure_not_a_crash() -> None:
    result = run_extractor("nope", b"/nonexistent", 1000, "", FaceSettings())
    assert isinstance(result, ExtractionFailure) and "unknown extractor" in result.reason
