"""The mapper's index of sidecars by the media file they describe."""

from __future__ import annotations

from importd.pipeline.sidecar_index import SidecarIndex


def test_a_media_file_finds_the_sidecars_named_for_it() -> None:
    index = SidecarIndex()
    assert not index.loaded(1)
    index.load(1, [(10, b"Films/A/Amelie.tags.json"), (11, b"Films/A/Amelie.mkv.json"), (12, b"x.txt")])
    assert index.loaded(1) and len(index) == 2, "a file that is no sidecar by name is left out"
    assert sorted(index.describing(1, b"Films/A/Amelie.mkv")) == [
        (10, b"Films/A/Amelie.tags.json"),
        (11, b"Films/A/Amelie.mkv.json"),
    ]
    assert index.describing(1, b"Films/A/Amelie.srt") == [], "a subtitle is no media"
    assert index.describing(2, b"Films/A/Amelie.mkv") == [], "another root"
    assert index.describing(1, b"Films/B/Amelie.mkv") == []


def test_entries_follow_moves_and_go_with_their_file() -> None:
    index = SidecarIndex()
    index.add(1, 10, b"A/x.nfo")
    index.add(1, 10, b"B/y.NFO")  # the same file, moved and renamed
    assert index.describing(1, b"A/x.mp4") == [] and index.describing(1, b"B/y.mp4") == [(10, b"B/y.NFO")]
    index.remove(10)
    index.remove(99)
    assert index.describing(1, b"B/y.mp4") == [] and len(index) == 0
