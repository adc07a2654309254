"""Media writes and reads: an outcome stored per content and extractor (a newer one replaces
it), read back for `info`, the indexes, the catch-up, `errors` and `dupes`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Connection

from importd.catalog import media
from importd.catalog.writer import apply_ops
from importd.items import FileRef, Vanished
from importd.media.failure import ExtractionFailure
from importd.media.versions import WorkKey
from importd.media.video import VideoFingerprint
from tests.unit.importd.catalog.conftest import on_postgresql, register

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


@dataclass
class FakeFace:
    bbox: tuple[float, float, float, float]
    det_score: float
    embedding: np.ndarray


def test_outcomes_are_stored_replaced_and_read_back(catalog: Connection) -> None:
    register(catalog, {b"a.mp4": H1, b"b.jpg": H2})
    fp = VideoFingerprint(12.5, (1, None, -3), (False, True, False))
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "video_fp", 1), fp, 0.5), 10.0)
    failed = ExtractionFailure("image", "truncated")
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H2, "image", 1), failed), 11.0)
    face = FakeFace((1, 2, 3, 4), 0.9, np.ones(512, dtype=np.float32) / np.sqrt(512))
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "faces", 1), [face, face]), 12.0)
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "faces", 2), [face]), 13.0)

    assert media.done_versions(catalog, [H1, H2, H3]) == {H1: {"video_fp": 1, "faces": 2}, H2: {"image": 1}}
    info = media.content_media(catalog, H1)
    assert sorted(e["extractor"] for e in info["extractions"]) == ["faces", "video_fp"]
    assert info["video"]["duration_s"] == 12.5 and info["image"] is None
    assert [f["idx"] for f in info["faces"]] == [0], "a newer version replaces the faces"
    images, videos, faces = media.load_indexes(catalog)
    assert images == [] and videos == {H1: fp} and [key for key, _ in faces] == [(H1, 0)]
    assert np.frombuffer(faces[0][1], dtype=np.float32).shape == (512,)
    assert media.extraction_failures(catalog, 10, [1]) == [(H2, "image", "truncated", 11.0, 1, b"b.jpg")]


def catch_up_and_duplicate_reads(catalog: Connection) -> None:
    register(catalog, {b"a": H1, b"b": H1, b"c": H2})
    up_to = media.last_file_id(catalog)
    register(catalog, {b"d": H3}, now=2.0, inode=10)
    apply_ops(catalog, [Vanished(FileRef(1, "r", b"c"))], 3.0)
    assert sorted(d for d, _, _ in media.outdated_contents(catalog, 10, [1])) == [H1, H3]
    assert [d for d, _, _ in media.outdated_contents(catalog, 10, [1], up_to)] == [H1]
    assert media.exact_duplicates(catalog) == {H1: [(1, b"a"), (1, b"b")]}
    assert media.present_paths(catalog, [H2, H3, H3]) == {H3: [(1, b"d")]}
    failed = ExtractionFailure("image", "truncated")
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "image", 1), failed), 11.0)
    assert media.extraction_failures(catalog, 10, [1]) == [(H1, "image", "truncated", 11.0, 1, b"a")]


def test_catch_up_and_duplicate_reads(catalog: Connection) -> None:
    catch_up_and_duplicate_reads(catalog)


def test_catch_up_and_duplicate_reads_on_postgresql(pg_url: str) -> None:
    """The same answers where the SQL differs: one path per content (SQLite's bare GROUP BY
    columns, DISTINCT ON there) and the first path of a failure (no min() of bytea there)."""
    on_postgresql(pg_url, catch_up_and_duplicate_reads)


def test_facts_become_json() -> None:
    assert media.to_jsonable(FakeFace((1, 2, 3, 4), float("nan"), np.zeros(2))) == {
        "bbox": [1, 2, 3, 4],
        "det_score": None,
        "embedding": [0.0, 0.0],
    }


def test_a_failed_extraction_names_root_and_path_of_one_same_file(catalog: Connection) -> None:
    """One content under two roots: the path shown is a real file's, its root with its path (not
    the smallest root beside the smallest path of another file), and another server's files
    are not this one's errors."""
    from importd.catalog.roots import ensure_roots
    from importd.items import FileStat, HashedFile

    second = ensure_roots(catalog, "h", [("r", "/srv/r"), ("s", "/srv/s")])["s"]
    other = ensure_roots(catalog, "beta", [("r", "/srv/r")])["r"]
    apply_ops(catalog, [HashedFile(FileRef(second, "s", b"a.jpg"), FileStat(5, 1, 1, 50, 7), H1)], 1.0)
    apply_ops(catalog, [HashedFile(FileRef(1, "r", b"z.jpg"), FileStat(5, 1, 1, 51, 7), H1)], 2.0)
    apply_ops(catalog, [HashedFile(FileRef(other, "r", b"b.jpg"), FileStat(5, 1, 1, 52, 7), H2)], 2.0)
    failed = ExtractionFailure("image", "truncated")
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "image", 1), failed), 11.0)
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H2, "image", 1), failed), 11.0)
    assert media.extraction_failures(catalog, 10, [1, second]) == [
        (H1, "image", "truncated", 11.0, second, b"a.jpg")
    ]
    assert media.extraction_failures(catalog, 10, [other]) == [
        (H2, "image", "truncated", 11.0, other, b"b.jpg")
    ]
