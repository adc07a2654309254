"""12-megapixel camera-like JPEGs with EXIF, made with numpy and Pillow (for tests; the bench has its own
generator in bench/camera.py with more variety)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CAMERA_SIZE = (4000, 3000)  # 12 Mpx, 4:3 as most camera sensors

TAG_ORIENTATION = 0x0112
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_EXIF_IFD = 0x8769
TAG_DATETIME_ORIGINAL = 0x9003
TAG_OFFSET_TIME_ORIGINAL = 0x9011


def camera_picture(seed: int, size: tuple[int, int] = CAMERA_SIZE) -> Image.Image:
    """Smooth colour fields enlarged from a small random picture, plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    small = rng.integers(0, 256, (height // 250, width // 250, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = big + rng.integers(-3, 4, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def save_camera_jpeg(
    picture: Image.Image,
    path: Path,
    *,
    orientation: int = 1,
    make: str = "Canon",
    model: str = "Canon EOS 450D",
    taken: str = "2019:07:14 16:20:05",
    offset: str | None = "+02:00",
) -> Path:
    exif = Image.Exif()
    exif[TAG_MAKE] = make
    exif[TAG_MODEL] = model
    exif[TAG_ORIENTATION] = orientation
    sub = exif.get_ifd(TAG_EXIF_IFD)
    sub[TAG_DATETIME_ORIGINAL] = taken
    if offset is not None:
        sub[TAG_OFFSET_TIME_ORIGINAL] = offset
    picture.save(path, quality=92, exif=exif)
    return path
