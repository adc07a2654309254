"""Test videos are made with the ffmpeg importd itself resolves (media/ffmpeg.py): the system's on
PATH, else the imageio-ffmpeg wheel's, so the video tests run on a machine with Python and nothing else."""

from __future__ import annotations

import subprocess

from importd.media.ffmpeg import current_ffmpeg


def ffmpeg_path() -> str:
    found = current_ffmpeg()
    # imageio-ffmpeg is a dependency: an ffmpeg is always there, so its absence fails, never skips.
    assert found.path is not None, f"no ffmpeg: {found.problem}"
    return found.path


def run_ffmpeg(*args: str) -> None:
    subprocess.run(
        [ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )
