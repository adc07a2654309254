"""Extract: technical metadata, perceptual hashes and faces for registered media.

Runs after registration, keyed by content hash: the same content at two paths is analysed once,
and only extractors whose stored version is older than the current one run again (in the
background, behind new files). The CPU-bound work runs in `ExtractionPool` worker processes with
a per-file time limit, never on the event loop; a corrupt or hostile file ends as a recorded
failure with its reason, never as a crash or a stall. Results go through the single catalog
writer; the in-memory near-duplicate indexes follow them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.media import (
    ExtractOutcome,
    done_versions,
    last_file_id,
    load_indexes,
    outdated_contents,
    store_outcome,
)
from importd.catalog.tables import chunks
from importd.catalog.writer import BatchResult, CatalogWriter, FileChange
from importd.config import MediaConfig

# Only light modules here: the heavy ones (numpy, Pillow, scipy, onnxruntime) load when
# the first media file is met, so a daemon cataloguing none never pays for them.
from importd.media.failure import ExtractionFailure
from importd.media.ffmpeg import current_ffmpeg
from importd.media.pack import check_pack_files
from importd.media.pool import ExtractionPool, Priority
from importd.media.versions import EXTRACTOR_VERSIONS, MediaKind, WorkKey, media_kind_of_path, pending_work

if TYPE_CHECKING:
    from importd.media.embedding_index import EmbeddingIndex
    from importd.media.faces import Face, FaceSettings
    from importd.media.hash_index import HashIndex
    from importd.media.video import VideoFingerprint

log = logging.getLogger("importd.extract")


@dataclass(frozen=True)
class Job:
    key: WorkKey
    path: bytes
    priority: Priority


@dataclass
class MediaCounters:
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    by_extractor: dict[str, int] = field(default_factory=dict)


def run_extractor(extractor: str, path: bytes, max_pixels: int, pack: str, settings: FaceSettings) -> Any:
    """Pool entry point (module level, picklable): one extractor on one file."""
    from importd.media.faces import faces_in_file
    from importd.media.image import extract_image
    from importd.media.video import extract_av, video_fingerprint

    if extractor == "image":
        return extract_image(path, max_pixels=max_pixels)
    if extractor == "av":
        return extract_av(path)
    if extractor == "video_fp":
        facts = extract_av(path)
        if isinstance(facts, ExtractionFailure):
            return ExtractionFailure("video_fp", f"no duration: {facts.reason}")
        if not facts.duration_s or not facts.width:
            return ExtractionFailure("video_fp", "not a video with a duration and a picture")
        return video_fingerprint(path, facts.duration_s)
    if extractor == "faces":
        return faces_in_file(path, pack, settings)
    return ExtractionFailure(extractor, f"unknown extractor {extractor!r}")


class MediaStage:
    """`submit` takes committed file changes; `run` extracts what each content still owes."""

    def __init__(
        self,
        config: MediaConfig,
        engine: AsyncEngine,
        writer: CatalogWriter,
        root_paths: Callable[[], Mapping[int, bytes]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.engine = engine
        self.writer = writer
        self.root_paths = root_paths
        self.clock = clock
        self.counters = MediaCounters()
        self.face_settings: FaceSettings | None = None
        self.faces_disabled: str | None = None
        self.refresh_faces_state()
        # Built by `_load` when the first media content is met.
        self.images: HashIndex[str] | None = None
        self.videos: dict[str, VideoFingerprint] = {}
        self.faces: EmbeddingIndex[tuple[str, int]] | None = None
        self.loaded = anyio.Event()
        self._load_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self.ready = anyio.Event()
        self.pool: ExtractionPool | None = None
        self._send: MemoryObjectSendStream[Job]
        self._recv: MemoryObjectReceiveStream[Job]
        self._send, self._recv = anyio.create_memory_object_stream[Job](float("inf"))
        self._in_flight: set[WorkKey] = set()
        self._face_counts: dict[str, int] = {}
        self._planning = 0
        self._intake_send: MemoryObjectSendStream[tuple[list[FileChange], Priority]]
        self._intake_recv: MemoryObjectReceiveStream[tuple[list[FileChange], Priority]]
        self._intake_send, self._intake_recv = anyio.create_memory_object_stream[
            tuple[list[FileChange], Priority]
        ](float("inf"))

    def refresh_faces_state(self) -> None:
        if not self.config.faces_enabled:
            self.faces_disabled = "disabled in the configuration ([faces] enabled = false)"
            return
        pack = self.config.faces_pack
        problem = check_pack_files(str(pack)) if pack else None
        self.faces_disabled = f"{problem.reason}: {problem.path}" if problem else None

    def reconfigure(self, config: MediaConfig) -> None:
        """On reload: thresholds, time limit and the face pack take effect for new work; the
        pool's size and turning media on or off need a restart."""
        self.config = dataclasses.replace(config, workers=self.config.workers, enabled=self.config.enabled)
        self.refresh_faces_state()
        if self.face_settings is not None:
            from importd.media.faces import FaceSettings

            self.face_settings = FaceSettings(
                min_det_score=config.face_min_score, min_face_px=config.face_min_px
            )

    def enabled_extractors(self) -> list[str]:
        names = list(EXTRACTOR_VERSIONS)
        if self.faces_disabled:
            names.remove("faces")
        return names

    async def start(self, tg: anyio.abc.TaskGroup, after: Sequence[anyio.Event] = ()) -> None:
        """`after`: the start-up reconciles. The catch-up is background work; run during them it
        would slow the walk the operator is waiting for."""
        if self.config.enabled:
            self._tg = tg
            tg.start_soon(self._intake)
            tg.start_soon(self._catch_up, after)

    async def ensure_loaded(self) -> None:
        """Load the media libraries, build the near-duplicate indexes from the catalog and start
        the worker pool: once, when the first media content is met (or when `importctl
        dupes`/`info` asks)."""
        async with self._load_lock:
            if self.loaded.is_set():
                return
            import numpy as np

            from importd.media.embedding_index import EmbeddingIndex
            from importd.media.faces import FaceSettings
            from importd.media.hash_index import HashIndex

            self.face_settings = FaceSettings(
                min_det_score=self.config.face_min_score, min_face_px=self.config.face_min_px
            )
            with anyio.CancelScope(shield=True):  # a query torn by cancellation can hang the exit
                async with self.engine.connect() as conn:
                    images, videos, faces = await conn.run_sync(load_indexes)
            self.images = HashIndex()
            self.images.add_many(images)
            self.videos = videos
            self.faces = EmbeddingIndex(512)
            for key, blob in faces:
                self.faces.add(key, np.frombuffer(blob, dtype=np.float32))
                self._face_counts[key[0]] = max(self._face_counts.get(key[0], 0), key[1] + 1)
            self.pool = ExtractionPool(self.config.workers)
            assert self._tg is not None
            for _ in range(self.config.workers + 1):
                self._tg.start_soon(self._worker)
            self.loaded.set()

    def close(self) -> None:
        """At shutdown, once the stage's tasks have ended: its queues and its worker processes."""
        self._send.close()
        self._intake_send.close()
        self._recv.close()
        self._intake_recv.close()
        if self.pool is not None:
            self.pool.close()

    def committed(self, result: BatchResult) -> None:
        """The writer's listener: what one batch committed."""
        self.submit(result.changes)

    def submit(self, changes: Sequence[FileChange]) -> None:
        """Only queues, never waits: the writer calls it (through `committed`) after each commit."""
        if self.config.enabled and changes:
            self._intake_send.send_nowait((list(changes), Priority.FOREGROUND))

    async def _intake(self) -> None:
        async for changes, priority in self._intake_recv:
            self._planning += 1  # still "intake" in status until its jobs are queued
            try:
                await self._plan(changes, priority)
            except Exception:
                log.exception("planning media extraction failed")
            finally:
                self._planning -= 1

    async def _plan(self, changes: Sequence[FileChange], priority: Priority) -> None:
        roots = self.root_paths()
        wanted: dict[str, tuple[MediaKind, bytes]] = {}
        for change in changes:
            if change.blake3 is None or change.kind in ("vanished", "error"):
                continue
            found = media_kind_of_path(change.relpath)
            root = roots.get(change.root_id)
            if found is None or root is None:
                continue
            wanted.setdefault(change.blake3, (found, root + b"/" + change.relpath))
        if not wanted:
            return
        await self.ensure_loaded()
        async with self.engine.connect() as conn:
            done = await conn.run_sync(done_versions, list(wanted))
        enabled = self.enabled_extractors()
        for digest, (kind, path) in wanted.items():
            for key in pending_work(digest, kind, done.get(digest, {}), enabled=enabled):
                if key in self._in_flight:
                    continue
                self._in_flight.add(key)
                self.counters.queued += 1
                rerun = key.extractor in done.get(digest, {})
                await self._send.send(Job(key, path, Priority.BACKGROUND if rerun else priority))

    async def _catch_up(self, after: Sequence[anyio.Event]) -> None:
        """At start-up: contents registered before (or before a version bump) get their work,
        at background priority, behind anything new."""
        async with self.engine.connect() as conn:
            up_to_id = await conn.run_sync(last_file_id)
        for event in after:
            await event.wait()
        if up_to_id == 0:
            self.ready.set()
            return  # an empty catalog at start-up: everything since was planned as it committed
        async with self.engine.connect() as conn:
            rows = await conn.run_sync(outdated_contents, 10_000_000, list(self.root_paths()), up_to_id)
        batch = [FileChange(0, root_id, relpath, "updated", digest) for digest, root_id, relpath in rows]
        for part in chunks(batch, 1000):
            await self._plan(list(part), Priority.BACKGROUND)
        self.ready.set()

    async def _worker(self) -> None:
        async for job in self._recv:
            self.counters.queued -= 1
            self.counters.running += 1
            try:
                await self._run(job)
            finally:
                self.counters.running -= 1
                self._in_flight.discard(job.key)

    async def _run(self, job: Job) -> None:
        assert self.pool is not None
        if not os.path.exists(job.path):
            return  # moved or deleted since: a later change brings the content back
        started = time.process_time()
        assert self.face_settings is not None
        result = await self.pool.run(
            job.key.extractor,
            run_extractor,
            job.key.extractor,
            job.path,
            self.config.max_pixels,
            str(self.config.faces_pack or ""),
            self.face_settings,
            timeout=self.config.timeout_seconds,
            priority=job.priority,
        )
        if isinstance(result, ExtractionFailure) and not os.path.exists(job.path):
            return  # the file went away mid-extraction: not a verdict on its content
        outcome = ExtractOutcome(job.key, result, time.process_time() - started)
        await self.writer.call(lambda c: store_outcome(c, outcome, self.clock()))
        self._index(outcome)
        name = job.key.extractor
        self.counters.by_extractor[name] = self.counters.by_extractor.get(name, 0) + 1
        if isinstance(result, ExtractionFailure):
            self.counters.failed += 1
            log.warning(
                "%s of %s failed: %s",
                name,
                job.path.decode("utf-8", "backslashreplace"),
                result.reason,
                extra={"path": job.path, "hash": job.key.content_hash},
            )
        else:
            self.counters.done += 1

    def _index(self, outcome: ExtractOutcome) -> None:
        import numpy as np

        from importd.media.image import ImageFacts
        from importd.media.video import VideoFingerprint

        digest = outcome.key.content_hash
        result = outcome.result
        if isinstance(result, ExtractionFailure) or self.images is None or self.faces is None:
            return
        if outcome.key.extractor == "image" and isinstance(result, ImageFacts):
            self.images.remove(digest)
            if not result.low_detail:
                self.images.add(digest, result.phash)
        elif outcome.key.extractor == "video_fp" and isinstance(result, VideoFingerprint):
            self.videos[digest] = result
        elif outcome.key.extractor == "faces":
            faces: list[Face] = result
            for i in range(self._face_counts.pop(digest, 0)):
                self.faces.remove((digest, i))
            self._face_counts[digest] = len(faces)
            for i, face in enumerate(faces):
                self.faces.add((digest, i), np.asarray(face.embedding, dtype=np.float32))

    def status(self) -> dict[str, Any]:
        ffmpeg = current_ffmpeg()  # resolved as the pool's workers resolve it
        return {
            "enabled": self.config.enabled,
            # Until ready (indexes loaded), work waits in the intake queue.
            "ready": self.ready.is_set(),
            "intake": self._intake_send.statistics().current_buffer_used + self._planning,
            "queued": self.counters.queued,
            "running": self.counters.running,
            "done": self.counters.done,
            "failed": self.counters.failed,
            "faces": {
                "state": "disabled" if self.faces_disabled else "enabled",
                "reason": self.faces_disabled,
                "path": str(self.config.faces_pack) if self.config.faces_pack else None,
            },
            "ffmpeg": {"path": ffmpeg.path, "source": ffmpeg.source, "problem": ffmpeg.problem},
        }


__all__ = ["MediaStage", "run_extractor"]
