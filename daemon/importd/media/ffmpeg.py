"""Which ffmpeg takes video fingerprints' frames: the system's on PATH, else the one imageio-ffmpeg ships.

The system's comes first: a distribution patches its decoders with the rest of the system (Debian's
ffmpeg is the one CI and the service's hosts install). The imageio-ffmpeg wheel, a dependency, ships a
static build, so a machine with Python and nothing else still fingerprints videos (its fingerprints are
bit-identical to Debian's: tests/unit/importd/media/test_ffmpeg.py compares them where both exist).
Either runs as a child process, which a hung decoder cannot take our worker down with.

`IMPORTD_FFMPEG=path` or `IMPORTD_FFMPEG=imageio-ffmpeg` allows only that source (tests use it to run
the wheel's binary where the system has one too). Standard library only until the wheel is asked.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Source = Literal["path", "imageio-ffmpeg"]
SOURCES: tuple[Source, ...] = ("path", "imageio-ffmpeg")
FORCE_ENV = "IMPORTD_FFMPEG"


@dataclass(frozen=True, slots=True)
class Ffmpeg:
    """The ffmpeg in use (`path` and `source`), or why there is none (`path` None, `problem` says)."""

    path: str | None
    source: Source | None
    problem: str | None = None


def find_ffmpeg(environ: Mapping[str, str] | None = None) -> Ffmpeg:
    """Resolve ffmpeg now: PATH first, then the imageio-ffmpeg wheel's binary."""
    env = os.environ if environ is None else environ
    forced = env.get(FORCE_ENV, "").strip()
    if forced and forced not in SOURCES:
        return Ffmpeg(None, None, f"{FORCE_ENV}={forced!r} is not one of {', '.join(SOURCES)}")
    if forced in ("", "path"):
        found = shutil.which("ffmpeg", path=env.get("PATH", os.defpath))
        if found is not None:
            return Ffmpeg(os.path.abspath(found), "path")
        if forced == "path":
            return Ffmpeg(None, None, "no ffmpeg on PATH")
    return _from_wheel()


@functools.cache
def current_ffmpeg() -> Ffmpeg:
    """`find_ffmpeg` once per process (each pool worker and the daemon resolve it the same way)."""
    return find_ffmpeg()


def _from_wheel() -> Ffmpeg:
    try:
        import imageio_ffmpeg
    except ImportError:
        return Ffmpeg(None, None, "no ffmpeg on PATH and imageio-ffmpeg is not installed")
    try:
        exe = str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # no binary for this platform, and none elsewhere that it knows of
        return Ffmpeg(None, None, "no ffmpeg on PATH and imageio-ffmpeg has no binary for this platform")
    # Without a binary of its own, imageio-ffmpeg answers the bare name "ffmpeg" (PATH, looked at above).
    if not os.path.isabs(exe):
        return Ffmpeg(None, None, "no ffmpeg on PATH and imageio-ffmpeg has no binary for this platform")
    return Ffmpeg(exe, "imageio-ffmpeg")
