"""Small JPEGs for the HTML report: a picture's thumbnail, a video's strip of keyframes.

Pictures are decoded in the media pool's worker processes (`thumbnails` is its picklable entry
point), never on the event loop: a damaged file can hang a decoder, and the pool kills a worker
that overruns. Video strips are made by an ffmpeg child process, killed at its time limit, so
they may run from a daemon thread beside the pool (`video_strip(..., in_worker=False)`). Every
failure is a None in the answer, never an exception: a missing thumbnail is a grey box in the
page, not a missing report.

A picture is decoded with JPEG draft mode (libjpeg scales by 1/2, 1/4 or 1/8 while decoding, so a
50 Mpx photo never exists at full size), shrunk to at most `THUMB_SIDE` pixels and saved at
`QUALITY`: 3 to 8 KB a picture. A video's frames come from one ffmpeg run (the same binary and
input seeking as the fingerprints, `media/video.py`), each fitted into a `FRAME_W`×`FRAME_H` box and
laid side by side by Pillow.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from PIL import Image

from importd.media.ffmpeg import current_ffmpeg
from importd.runtime import die_with_parent

THUMB_SIDE = 160
QUALITY = 70
STRIP_FRAMES = 4
FRAME_W, FRAME_H = 128, 72
# Per video; the pool's timeout for a whole batch is above the sum of these.
FFMPEG_TIMEOUT_S = 20.0
# Larger pictures are refused (Pillow's own guard is twice its 89.5 Mpx warning level).
MAX_PIXELS = 2 * 89_478_485

ThumbKind = Literal["image", "video"]
# (kind, absolute path as bytes, duration in seconds for a video, else 0)
ThumbJob = tuple[ThumbKind, bytes, float]

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def thumbnails(jobs: Sequence[ThumbJob]) -> list[bytes | None]:
    """Pool entry point: a JPEG (or None) per job, in order."""
    return [
        image_thumbnail(path) if kind == "image" else video_strip(path, duration)
        for kind, path, duration in jobs
    ]


def image_thumbnail(path: bytes, side: int = THUMB_SIDE) -> bytes | None:
    """The picture as a viewer shows it (EXIF orientation applied), at most `side` px, as JPEG."""
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(os.fsdecode(path)) as im:
            try:
                orientation = im.getexif().get(0x0112)
            except Exception:  # a damaged EXIF block must not cost the picture
                orientation = None
            im.draft("RGB", (side, side))
            im.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
            small = im.transpose(method) if method is not None else im
            return _jpeg(_flat_rgb(small))
    except Exception:  # decoders raise anything on damaged input; the page shows a grey box
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


def video_strip(
    path: bytes, duration_s: float, frames: int = STRIP_FRAMES, *, in_worker: bool = True
) -> bytes | None:
    """`frames` keyframes at the middle of equal slices of the running time, side by side.
    `in_worker` False: called from a thread of the daemon, where no `preexec_fn` may run."""
    binary = current_ffmpeg()
    if binary.path is None or not duration_s or duration_s <= 0:
        return None
    positions = [duration_s * (i + 0.5) / frames for i in range(frames)]
    try:
        pictures = _grab(binary.path, path, positions, in_worker)
    except (OSError, subprocess.SubprocessError):
        return None
    if not any(p is not None for p in pictures):
        return None
    strip = Image.new("RGB", (FRAME_W * frames, FRAME_H), (34, 34, 34))
    for i, picture in enumerate(pictures):
        if picture is not None:
            strip.paste(picture, (i * FRAME_W, 0))
    return _jpeg(strip)


def _grab(ffmpeg: str, path: bytes, positions: list[float], in_worker: bool) -> list[Image.Image | None]:
    """One ffmpeg run, an input per position (fast input seeking), an RGB frame out of each,
    fitted into the frame box with bars. A position that gives no picture is None."""
    source = b"file:" + path  # "file:" keeps "a:b.mp4" from reading as a protocol, "-x" as an option
    box = f"scale={FRAME_W}:{FRAME_H}:force_original_aspect_ratio=decrease:flags=bilinear,"
    box += f"pad={FRAME_W}:{FRAME_H}:(ow-iw)/2:(oh-ih)/2:color=0x222222,setsar=1,format=rgb24"
    with tempfile.TemporaryDirectory(prefix="importd-strip-") as scratch:
        # -timelimit: an ffmpeg left behind by a daemon killed mid-report still ends (CPU seconds).
        command: list[str | bytes] = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        command += ["-timelimit", f"{FFMPEG_TIMEOUT_S:g}"]
        for position in positions:
            command += ["-threads", "1", "-ss", f"{position:.3f}", "-i", source]
        command += ["-filter_complex", ";".join(f"[{i}:v:0]{box}[f{i}]" for i in range(len(positions)))]
        outputs = [Path(scratch) / f"{i}.rgb" for i in range(len(positions))]
        for i, output in enumerate(outputs):
            command += ["-map", f"[f{i}]", "-frames:v", "1", "-f", "rawvideo", str(output)]
        subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=FFMPEG_TIMEOUT_S,
            # A pool worker killed for overrunning takes its ffmpeg along (not from a threaded daemon:
            # a preexec_fn there could deadlock the child).
            preexec_fn=die_with_parent if in_worker else None,
            check=False,
        )
        size = FRAME_W * FRAME_H * 3
        pictures: list[Image.Image | None] = []
        for output in outputs:
            data = output.read_bytes() if output.exists() else b""
            pictures.append(
                Image.frombytes("RGB", (FRAME_W, FRAME_H), data[:size]) if len(data) >= size else None
            )
        return pictures


def _flat_rgb(im: Image.Image) -> Image.Image:
    """RGB on white: JPEG has no alpha, and 16-bit or palette pictures need converting first."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I;16"):
        return im.point(lambda v: v / 257).convert("RGB")
    return im.convert("RGB")


def _jpeg(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()
