"""Work keyed by (content hash, extractor, version); bumping a version re-runs only that extractor."""

from __future__ import annotations

import os

import pytest

from importd.media.versions import (
    EXTRACTOR_VERSIONS,
    WorkKey,
    is_rerun,
    media_kind,
    media_kind_of_path,
    pending_work,
)


def test_every_extractor_has_a_version() -> None:
    assert set(EXTRACTOR_VERSIONS) == {"av", "image", "video_fp", "faces"}
    assert all(v >= 1 for v in EXTRACTOR_VERSIONS.values())


def test_new_content_owes_every_applicable_extractor() -> None:
    assert pending_work("h1", "image", {}) == [WorkKey("h1", "image", 1), WorkKey("h1", "faces", 1)]
    assert pending_work("h2", "video", {}) == [WorkKey("h2", "av", 1), WorkKey("h2", "video_fp", 1)]
    assert pending_work("h3", "audio", {}) == [WorkKey("h3", "av", 1)]


def test_done_content_owes_nothing_and_a_bump_reruns_one_extractor() -> None:
    done = {"image": 1, "faces": 1}
    assert pending_work("h", "image", done) == []
    bumped = {**EXTRACTOR_VERSIONS, "faces": 2}
    work = pending_work("h", "image", done, versions=bumped)
    assert work == [WorkKey("h", "faces", 2)]
    assert is_rerun(work[0], done)
    assert not is_rerun(WorkKey("new", "faces", 2), {})


def test_disabled_extractors_are_skipped() -> None:
    enabled = set(EXTRACTOR_VERSIONS) - {"faces"}
    assert pending_work("h", "image", {}, enabled=enabled) == [WorkKey("h", "image", 1)]


def test_media_kind_from_suffix() -> None:
    assert media_kind(".JPG") == "image" and media_kind("heic") == "image"
    assert media_kind(".MOV") == "video" and media_kind(".mxf") == "video"
    assert media_kind(".flac") == "audio"
    assert media_kind(".txt") is None and media_kind("") is None


@pytest.mark.parametrize(
    "relpath",
    [b"a/b.jpg", b"a/.jpg", b"a/..jpg", b"a/x.JPG", b"x.tar.mp4", b"a.b/c", b"noext", b".hidden.png",
     b"a/b.\xff", b"a/...", b"a/b.", b"d.mkv/clip", b"caf\xe9.MOV", b"a/b.wav"],
)  # fmt: skip
def test_media_kind_of_a_raw_path_is_splitexts(relpath: bytes) -> None:
    expected = media_kind(os.path.splitext(relpath)[1].decode("utf-8", "replace"))
    assert media_kind_of_path(relpath) == expected
    assert media_kind_of_path(relpath) == expected  # remembered
