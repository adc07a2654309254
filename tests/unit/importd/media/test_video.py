"""extract_av and video_fingerprint on real files made with ffmpeg in the test.

The ffmpeg is the one importd resolves (the system's on PATH, else the imageio-ffmpeg wheel's), so
these run on a machine with Python and nothing else.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from importd.media.failure import ExtractionFailure
from importd.media.video import (
    VIDEO_NEAR_MAX_DISTANCE,
    AVFacts,
    VideoFingerprint,
    durations_compatible,
    extract_av,
    fingerprint_distance,
    video_fingerprint,
)
from importd.media.video_groups import video_groups
from tests.videos import run_ffmpeg as ffmpeg

SIZE = "320x240"


def make_video(path: Path, graph: str, *encode: str) -> Path:
    """Render a lavfi filter graph ending in [v] into `path` with the given encoder options."""
    ffmpeg("-filter_complex", graph, "-map", "[v]", *encode, str(path))
    return path


def source(name: str, seconds: float) -> str:
    # Not every lavfi source takes a duration (mandelbrot, life do not); trim works for all.
    return f"{name}{':' if '=' in name else '='}s={SIZE}:r=25,trim=duration={seconds}"


def with_intro(intro: str, body: str, intro_s: float, body_s: float) -> str:
    return (
        f"{source(intro, intro_s)}[a];{source(body, body_s)}[b];"
        "[a]format=yuv420p[a1];[b]format=yuv420p[b1];[a1][b1]concat=n=2:v=1:a=0[v]"
    )


X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {
        "base": d / "base.mp4",
        "black_a": make_video(d / "black_a.mp4", with_intro("color=black", "testsrc2", 2.5, 4.5), *X264),
        "black_b": make_video(d / "black_b.mp4", with_intro("color=black", "mandelbrot", 2.5, 4.5), *X264),
        "logo_a": make_video(d / "logo_a.mp4", with_intro("smptebars", "testsrc2", 2.0, 6.0), *X264),
        "logo_b": make_video(d / "logo_b.mp4", with_intro("smptebars", "life", 2.0, 6.0), *X264),
        "black": make_video(d / "black.mp4", f"{source('color=black', 5)},format=yuv420p[v]", *X264),
    }
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={SIZE}:r=25:d=8",
        "-f", "lavfi", "-i", "sine=frequency=440:d=8",
        *X264, "-c:a", "aac", "-ac", "2", "-metadata", "creation_time=2024-05-06T07:08:09Z",
        "-movflags", "+faststart", str(out["base"]),
    )  # fmt: skip
    # The same footage re-encoded: other codec, container, size and quality.
    out["reencoded"] = d / "reencoded.avi"
    ffmpeg(
        "-i", str(out["base"]), "-c:v", "mpeg4", "-q:v", "9", "-s", "240x180", "-an", str(out["reencoded"])
    )
    out["trimmed"] = d / "trimmed.mp4"
    ffmpeg("-i", str(out["base"]), "-t", "5", "-c", "copy", str(out["trimmed"]))
    return out


def av(path: Path | bytes) -> AVFacts:
    result = extract_av(path if isinstance(path, bytes) else str(path))
    assert isinstance(result, AVFacts), result
    return result


def av_failure(path: Path) -> ExtractionFailure:
    result = extract_av(str(path))
    assert isinstance(result, ExtractionFailure), result
    assert result.extractor == "av" and result.reason
    return result


@cache
def fingerprint(path: Path) -> VideoFingerprint:
    duration = av(path).duration_s
    assert duration is not None
    result = video_fingerprint(str(path), duration)
    assert isinstance(result, VideoFingerprint), result
    return result


def test_video_facts(videos: dict[str, Path]) -> None:
    got = av(videos["base"])
    assert got.container == "MPEG-4"
    assert got.duration_s == pytest.approx(8.0, abs=0.1)
    assert (got.width, got.height) == (320, 240)
    assert got.frame_rate == pytest.approx(25.0)
    assert got.frame_count == 200
    assert got.video_codec == "AVC"
    assert got.bit_rate and got.bit_rate > 0
    assert [(a.codec, a.channels) for a in got.audio] == [("AAC", 2)]
    assert got.created_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert got.has_video and got.warnings == ()


def test_audio_only(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:d=3", "-ac", "1", str(tmp_path / "tone.flac"))
    got = av(tmp_path / "tone.flac")
    assert got.container == "FLAC" and not got.has_video
    assert got.width is None and got.duration_s == pytest.approx(3.0, abs=0.05)
    assert [(a.codec, a.channels) for a in got.audio] == [("FLAC", 1)]


def test_random_bytes_empty_and_mislabelled_files_fail(tmp_path: Path) -> None:
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "empty.mov").write_bytes(b"")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "picture.mp4", "JPEG")
    assert "not a recognised" in av_failure(tmp_path / "noise.mp4").reason
    assert "not a recognised" in av_failure(tmp_path / "empty.mov").reason
    assert "without audio or video" in av_failure(tmp_path / "picture.mp4").reason


def test_truncated_mp4_with_index_at_the_end_fails(videos: dict[str, Path], tmp_path: Path) -> None:
    whole = tmp_path / "tail_index.mp4"
    ffmpeg("-i", str(videos["base"]), "-c", "copy", str(whole))  # no faststart: the index is last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    assert "truncated" in av_failure(cut).reason


def test_truncated_mp4_with_index_first_warns(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["base"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    got = av(cut)
    assert any("truncated" in w for w in got.warnings)
    assert got.duration_s == pytest.approx(8.0, abs=0.1)  # what the header declares
    # Frames past the cut are missing; the fingerprint keeps the ones that decode.
    result = video_fingerprint(str(cut), 8.0)
    assert isinstance(result, VideoFingerprint)
    assert None in result.frames and result.frames[0] is not None


def test_missing_file(tmp_path: Path) -> None:
    av_failure(tmp_path / "gone.mp4")


def test_reencode_matches(videos: dict[str, Path]) -> None:
    distance = fingerprint_distance(fingerprint(videos["base"]), fingerprint(videos["reencoded"]))
    assert distance is not None and distance <= VIDEO_NEAR_MAX_DISTANCE / 2


def test_shared_black_intro_does_not_match(videos: dict[str, Path]) -> None:
    a, b = fingerprint(videos["black_a"]), fingerprint(videos["black_b"])
    assert sum(a.blank) >= 2 and sum(b.blank) >= 2  # the intro covers several samples
    distance = fingerprint_distance(a, b)
    assert distance is not None and distance > 2 * VIDEO_NEAR_MAX_DISTANCE


def test_shared_title_card_does_not_match(videos: dict[str, Path]) -> None:
    distance = fingerprint_distance(fingerprint(videos["logo_a"]), fingerprint(videos["logo_b"]))
    assert distance is not None and distance > VIDEO_NEAR_MAX_DISTANCE


def test_two_black_videos_are_not_evidence_of_anything(videos: dict[str, Path]) -> None:
    black = fingerprint(videos["black"])
    assert all(black.blank)
    assert fingerprint_distance(black, black) is None


def test_duration_tolerance(videos: dict[str, Path]) -> None:
    assert fingerprint_distance(fingerprint(videos["base"]), fingerprint(videos["trimmed"])) is None
    assert durations_compatible(600.0, 609.0) and not durations_compatible(600.0, 615.0)
    assert durations_compatible(8.0, 8.9) and not durations_compatible(8.0, 9.2)


def test_video_groups(videos: dict[str, Path]) -> None:
    prints = {name: fingerprint(videos[name]) for name in ("base", "reencoded", "logo_a", "logo_b", "black")}
    groups = video_groups(prints.items())
    assert [sorted(k for k, _ in g.members) for g in groups] == [["base", "reencoded"]]
    assert all(d <= VIDEO_NEAR_MAX_DISTANCE for _, d in groups[0].members)


def test_fingerprint_of_garbage_fails(tmp_path: Path) -> None:
    (tmp_path / "noise.mkv").write_bytes(bytes(range(256)) * 40)
    result = video_fingerprint(str(tmp_path / "noise.mkv"), 10.0)
    assert isinstance(result, ExtractionFailure) and result.extractor == "video_fp"
    assert "ffmpeg" in result.reason
    unknown = video_fingerprint(str(tmp_path / "noise.mkv"), 0.0)
    assert isinstance(unknown, ExtractionFailure) and "duration" in unknown.reason


def test_awkward_file_names(videos: dict[str, Path], tmp_path: Path) -> None:
    """Names ffmpeg could read as a protocol or an option, and names that are not UTF-8."""
    odd = tmp_path / "-x:clip.mp4"
    shutil.copy(videos["base"], odd)
    assert fingerprint(odd) == fingerprint(videos["base"])
    raw = bytes(tmp_path) + b"/clip-\xff\xfe.mp4"
    shutil.copy(videos["base"], raw.decode("utf-8", "surrogateescape"))
    facts = av(raw)
    assert facts.duration_s == pytest.approx(8.0, abs=0.1)
    print_ = video_fingerprint(raw, 8.0)
    assert isinstance(print_, VideoFingerprint) and print_.frames == fingerprint(videos["base"]).frames


def test_sharing_the_positions_between_ffmpeg_runs_gives_the_same_frames(tmp_path: Path) -> None:
    """One run with an input per position (`processes=1`, the only way before the split) and any split
    of the positions give identical fingerprints, so fingerprints stored by version 1 stay valid.

    A film-like encode: B-frames and 4 s keyframe intervals, so every sample is decoded from the
    keyframe before it rather than being one.
    """
    film = tmp_path / "film.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s={SIZE}:r=25:d=30",
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "100", "-pix_fmt", "yuv420p", str(film),
    )  # fmt: skip
    duration = av(film).duration_s
    assert duration is not None
    prints = {n: video_fingerprint(str(film), duration, processes=n) for n in (1, 2, 3, 8, 20)}
    first = prints[1]
    assert isinstance(first, VideoFingerprint) and None not in first.frames
    assert len(set(first.frames)) > 4  # distinct pictures, not one frame over and over
    assert all(p == first for p in prints.values()), prints


def test_one_failing_run_fails_the_fingerprint(videos: dict[str, Path], tmp_path: Path) -> None:
    """The later shares' positions lie past the end of a copy cut short: their runs give no frames."""
    short = tmp_path / "short.mp4"
    ffmpeg("-i", str(videos["base"]), "-t", "2", "-c", "copy", str(short))
    result = video_fingerprint(str(short), 8.0, processes=2)
    assert isinstance(result, ExtractionFailure) and result.extractor == "video_fp"
