"""Thumbnails and keyframe strips: small JPEGs, upright, from any picture mode and any file name;
a file that cannot be read gives None, never an exception."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from importd.report.thumbnails import FRAME_H, FRAME_W, STRIP_FRAMES, image_thumbnail, thumbnails, video_strip
from tests.videos import run_ffmpeg


def opened(data: bytes | None) -> Image.Image:
    assert data is not None
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG"
    return im


def test_a_big_photo_becomes_a_small_upright_jpeg(tmp_path: Path) -> None:
    pixels = np.zeros((3000, 4000, 3), np.uint8)
    pixels[:, :2000] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=90, exif=exif)
    im = opened(image_thumbnail(os.fsencode(tmp_path / "big.jpg")))
    assert im.size == (120, 160)  # portrait once upright
    r, g, _ = im.convert("RGB").getpixel((60, 10))  # type: ignore[misc]
    assert r > 200 and g < 60  # the red half is on top after the rotation


def test_any_mode_and_any_name(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9 \n.png"
    Image.new("RGBA", (400, 100), (0, 0, 255, 0)).save(os.fsdecode(name))
    im = opened(image_thumbnail(name))
    assert im.size == (160, 40) and im.convert("RGB").getpixel((5, 5)) == (255, 255, 255)
    Image.fromarray(np.full((50, 50), 60000, np.uint16)).save(tmp_path / "deep.png")
    assert opened(image_thumbnail(os.fsencode(tmp_path / "deep.png"))).size == (50, 50)


def test_what_cannot_be_read_is_none(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(500))
    assert image_thumbnail(os.fsencode(tmp_path / "bad.jpg")) is None
    assert image_thumbnail(os.fsencode(tmp_path / "gone.jpg")) is None
    assert video_strip(os.fsencode(tmp_path / "bad.jpg"), 4.0) is None
    assert video_strip(os.fsencode(tmp_path / "gone.mp4"), 0.0) is None


def test_a_video_becomes_a_strip_of_keyframes(tmp_path: Path) -> None:
    clip = tmp_path / "clip \xe9.mp4"
    run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc=duration=4:size=320x240:rate=25", "-pix_fmt", "yuv420p", str(clip)
    )
    im = opened(video_strip(os.fsencode(clip), 4.0))
    assert im.size == (FRAME_W * STRIP_FRAMES, FRAME_H)
    # 4:3 in a 16:9 box: grey bars left and right of each frame, a picture in its middle
    grey = np.asarray(im.convert("RGB"), np.int16)
    assert abs(grey[FRAME_H // 2, 2] - 34).max() < 12
    assert grey[:, FRAME_W // 2 - 20 : FRAME_W // 2 + 20].std() > 30
    both = thumbnails([("video", os.fsencode(clip), 4.0), ("image", b"/nonexistent", 0.0)])
    assert both[0] is not None and both[1] is None
