"""The camera benchmark's inputs are what it says: 12 MP camera JPEGs with EXIF, and long videos made
by looping a short clip without re-encoding."""

from __future__ import annotations

from pathlib import Path

from bench.camera import make_camera_jpegs, make_long_video
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from importd.media.video import AVFacts, extract_av


def test_camera_jpegs_are_12_megapixels_with_a_cameras_exif(tmp_path: Path) -> None:
    paths = make_camera_jpegs(tmp_path, 4)
    facts = [extract_image(p, max_pixels=DEFAULT_MAX_PIXELS) for p in paths]
    assert all(isinstance(f, ImageFacts) for f in facts), facts
    sizes = [(f.width, f.height) for f in facts if isinstance(f, ImageFacts)]
    assert sizes == [(4000, 3000)] * 3 + [(3000, 4000)]  # the fourth is taken upright
    assert {f.camera for f in facts if isinstance(f, ImageFacts)} == {"Canon EOS 450D"}
    assert all(f.taken_at is not None for f in facts if isinstance(f, ImageFacts))
    assert all(1_000_000 < Path(p).stat().st_size < 6_000_000 for p in paths)


def test_a_long_video_is_a_short_clip_looped(tmp_path: Path) -> None:
    video = make_long_video(
        tmp_path / "long.mp4", size="160x90", clip_s=2, loops=30, preset="ultrafast", keyint=25
    )
    facts = extract_av(str(video))
    assert isinstance(facts, AVFacts) and facts.duration_s is not None
    assert abs(facts.duration_s - 60) < 0.5
    assert (facts.width, facts.height, facts.video_codec) == (160, 90, "AVC")
    assert list(tmp_path.iterdir()) == [video]  # the clip is removed
