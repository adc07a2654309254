"""Which ffmpeg fingerprints videos: PATH first, then the imageio-ffmpeg wheel's; and both agree."""

from __future__ import annotations

import os
from pathlib import Path

from importd.media.ffmpeg import FORCE_ENV, Ffmpeg, find_ffmpeg
from importd.media.video import VideoFingerprint, video_fingerprint
from tests.videos import run_ffmpeg


def fake_ffmpeg(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "ffmpeg"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


def test_an_ffmpeg_on_path_comes_first(tmp_path: Path) -> None:
    exe = fake_ffmpeg(tmp_path / "bin")
    assert find_ffmpeg({"PATH": f"{tmp_path / 'empty'}:{exe.parent}"}) == Ffmpeg(str(exe), "path")


def test_without_one_on_path_the_wheels_binary_is_used(tmp_path: Path) -> None:
    found = find_ffmpeg({"PATH": str(tmp_path)})
    assert found.source == "imageio-ffmpeg" and found.problem is None
    assert found.path is not None and os.path.isabs(found.path) and os.access(found.path, os.X_OK)


def test_the_wheels_binary_can_be_forced_beside_one_on_path(tmp_path: Path) -> None:
    fake_ffmpeg(tmp_path / "bin")
    found = find_ffmpeg({"PATH": str(tmp_path / "bin"), FORCE_ENV: "imageio-ffmpeg"})
    assert found.source == "imageio-ffmpeg" and found.path != str(tmp_path / "bin" / "ffmpeg")


def test_forcing_path_without_one_there_says_so(tmp_path: Path) -> None:
    assert find_ffmpeg({"PATH": str(tmp_path), FORCE_ENV: "path"}) == Ffmpeg(None, None, "no ffmpeg on PATH")


def test_an_unknown_forced_source_is_a_problem_not_a_guess() -> None:
    found = find_ffmpeg({"PATH": os.defpath, FORCE_ENV: "debian"})
    assert found.path is None and found.problem is not None and "debian" in found.problem


def test_fingerprints_agree_across_every_ffmpeg_found(tmp_path: Path) -> None:
    """The system's ffmpeg (Debian's, where installed: CI) and the wheel's static build give the same
    fingerprint of the same file, so a catalog keeps matching when a host gains or loses one."""
    video = tmp_path / "clip.mp4"
    graph = (
        "color=black:s=320x240:r=25,trim=duration=1.5,format=yuv420p[i];"
        "testsrc2=s=320x240:r=25,trim=duration=5,format=yuv420p[m];[i][m]concat=n=2:v=1:a=0[v]"
    )
    run_ffmpeg("-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", str(video))
    binaries = {
        source: found
        for source in ("path", "imageio-ffmpeg")
        if (found := find_ffmpeg({**os.environ, FORCE_ENV: source})).path is not None
    }
    assert "imageio-ffmpeg" in binaries, "imageio-ffmpeg is a dependency"
    prints = {source: video_fingerprint(str(video), 6.5, ffmpeg=found) for source, found in binaries.items()}
    for source, result in prints.items():
        assert isinstance(result, VideoFingerprint), (source, result)
        assert sum(not blank for blank in result.blank) >= 6
    assert len({(p.frames, p.blank) for p in prints.values() if isinstance(p, VideoFingerprint)}) == 1, prints


def test_no_ffmpeg_is_a_failure_with_the_reason(tmp_path: Path) -> None:
    result = video_fingerprint(str(tmp_path / "x.mp4"), 5.0, ffmpeg=Ffmpeg(None, None, "no ffmpeg on PATH"))
    assert (
        not isinstance(result, VideoFingerprint) and "ffmpeg unavailable: no ffmpeg on PATH" in result.reason
    )
