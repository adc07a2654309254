"""Still images: technical facts and perceptual hashes, with Pillow and imagehash.

Runs inside a pool worker (`pool.py`), never on the event loop: decoding is CPU-bound and a fuzzed
file can hang a decoder, which the pool's time limit then kills.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from importd.media.failure import ExtractionFailure, describe
from importd.media.hashes import is_low_detail, perceptual_hashes

EXTRACTOR = "image"

# Pillow tries formats in the order their plugins were imported, and first imports the one a file name's
# suffix suggests: left alone, the first files a worker opens decide how later ones are identified (after
# a .tga, the Pillow corpus's pillow.ico reads as a TGA, which has no signature, and fails). Importing
# every plugin now fixes the order for the worker's life.
Image.init()

T = TypeVar("T")

# Pillow's own hard limit (twice its 89.5 Mpx warning level): about a 13,000 × 13,000 picture. Above it a
# decode would need gigabytes per worker, and a tiny file declaring such a size is the classic
# decompression bomb.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

# Hashes only need a 32×32 grey picture; decoding and orienting a ≤512 px copy keeps a 50 Mpx photo
# cheap. JPEG decodes straight at 1/2, 1/4 or 1/8 scale (`draft`), so the full-size pixels never exist.
_HASH_SOURCE_SIZE = 512

_EXIF_IFD = 0x8769
_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What an operator needs to judge one image.

    `width`/`height` are as displayed (EXIF orientation applied). `phash`/`dhash` are signed 64-bit
    integers (see `hashes.py`). `low_detail` marks near-uniform pictures whose hashes say nothing.
    `warnings` are decoder complaints that did not stop the analysis (e.g. corrupt EXIF).
    """

    format: str
    width: int
    height: int
    mode: str
    taken_at: datetime | None
    camera: str | None
    phash: int
    dhash: int
    low_detail: bool
    warnings: tuple[str, ...] = ()


def extract_image(path: str | bytes, *, max_pixels: int) -> ImageFacts | ExtractionFailure:
    """Analyse one image file; every problem comes back as an `ExtractionFailure`, never raised."""
    result, notes = _guarded(EXTRACTOR, max_pixels, lambda: _extract(path, max_pixels))
    if isinstance(result, ImageFacts) and notes:
        result = replace(result, warnings=notes)
    return result


def decode_upright_rgb(
    path: str | bytes, *, max_pixels: int, max_side: int, extractor: str
) -> tuple[npt.NDArray[np.uint8], float] | ExtractionFailure:
    """Pixels as displayed (EXIF orientation applied), RGB, at most `max_side` on the long side.

    Returns the H×W×3 array and its scale relative to the full-size upright picture, so coordinates
    found in it can be mapped back. Guarded like `extract_image`; failures are named after `extractor`.
    """
    result, _ = _guarded(extractor, max_pixels, lambda: _decode_rgb(path, max_pixels, max_side, extractor))
    return result


def _guarded(
    extractor: str, max_pixels: int, work: Callable[[], T]
) -> tuple[T | ExtractionFailure, tuple[str, ...]]:
    """Run a Pillow decode with our pixel limit, turning every error into a failure value."""
    # Decoders report recoverable damage as warnings; record them instead of letting the process-wide
    # filter decide (it turns them into errors under pytest, into stderr noise in the daemon).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved_limit = Image.MAX_IMAGE_PIXELS
        # Pillow refuses sizes above twice this (DecompressionBombError) as soon as the header is read;
        # between once and twice, `_open_checked` refuses them.
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            result: T | ExtractionFailure = work()
        except Image.DecompressionBombError as error:
            result = ExtractionFailure(extractor, f"decompression bomb guard: {error}")
        except UnidentifiedImageError:
            result = ExtractionFailure(extractor, "not an image format Pillow can read")
        except MemoryError:
            result = ExtractionFailure(extractor, "out of memory while decoding")
        except Exception as error:  # decoders raise anything from OSError to struct.error on fuzzed input
            result = ExtractionFailure(extractor, describe(error))
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit
    notes = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return result, notes


def _open_checked(path: str | bytes, max_pixels: int, extractor: str) -> Image.Image | ExtractionFailure:
    im = Image.open(os.fsdecode(path) if isinstance(path, bytes) else path)
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        return ExtractionFailure(
            extractor,
            f"decompression bomb guard: {width}×{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels}",
        )
    if width <= 0 or height <= 0:
        im.close()
        return ExtractionFailure(extractor, f"invalid size {width}×{height}")
    return im


def _extract(path: str | bytes, max_pixels: int) -> ImageFacts | ExtractionFailure:
    opened = _open_checked(path, max_pixels, EXTRACTOR)
    if isinstance(opened, ExtractionFailure):
        return opened
    with opened as im:
        width, height = im.size
        image_format = im.format or "unknown"
        mode = im.mode
        exif = _exif(im)
        orientation = exif.get(_TAG_ORIENTATION)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        im.draft(None, (_HASH_SOURCE_SIZE, _HASH_SOURCE_SIZE))
        im.load()
        source = _hash_source(im, orientation)
        phash, dhash = perceptual_hashes(source)
        return ImageFacts(
            format=image_format,
            width=width,
            height=height,
            mode=mode,
            taken_at=_taken_at(exif),
            camera=_camera(exif),
            phash=phash,
            dhash=dhash,
            low_detail=is_low_detail(source),
        )


def _decode_rgb(
    path: str | bytes, max_pixels: int, max_side: int, extractor: str
) -> tuple[npt.NDArray[np.uint8], float] | ExtractionFailure:
    opened = _open_checked(path, max_pixels, extractor)
    if isinstance(opened, ExtractionFailure):
        return opened
    with opened as im:
        full_side = max(im.size)
        orientation = _exif(im).get(_TAG_ORIENTATION)
        im.draft("RGB", (max_side, max_side))
        im.load()
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        picture = _upright(im, orientation)
        if picture.mode != "RGB":
            picture = picture.convert("RGB")
        return np.asarray(picture, dtype=np.uint8), max(picture.size) / full_side


def _hash_source(im: Image.Image, orientation: object) -> Image.Image:
    """A small, upright, 8-bit picture as a viewer would show it, for hashing. Shrinks `im` in place."""
    im.thumbnail((_HASH_SOURCE_SIZE, _HASH_SOURCE_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    small = _upright(im, orientation)
    if small.mode in ("I", "F") or small.mode.startswith("I;16"):
        # convert("L") clips these modes at 255, which turns most 16-bit pictures white.
        pixels = np.asarray(small, dtype=np.float64)
        if small.mode.startswith("I;16"):
            pixels = pixels / 257.0
        else:
            low, high = float(pixels.min()), float(pixels.max())
            pixels = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0.0
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    if small.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in small.info:
        # Transparent areas hold arbitrary colour; flatten on white as exporters usually do.
        rgba = small.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if small.mode not in ("L", "RGB"):
        return small.convert("RGB")
    return small


_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(im: Image.Image, orientation: object) -> Image.Image:
    # Applied from the tag read once and guarded: ImageOps.exif_transpose would parse the EXIF block
    # again, and on a copy of a picture with a damaged block it raises.
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im


def _exif(im: Image.Image) -> Image.Exif:
    try:
        return im.getexif()
    except Exception:  # a broken EXIF block must not cost us the picture
        return Image.Exif()


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", " ").strip()
    return text or None


def _camera(exif: Image.Exif) -> str | None:
    make, model = _text(exif.get(_TAG_MAKE)), _text(exif.get(_TAG_MODEL))
    if make and model:
        # Many makers repeat themselves in Model ("Canon" / "Canon EOS 5D").
        return model if model.lower().startswith(make.lower().split()[0]) else f"{make} {model}"
    return make or model


def _taken_at(exif: Image.Exif) -> datetime | None:
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    for raw, offset in (
        (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_TIME_ORIGINAL)),
        (exif.get(_TAG_DATETIME), None),
    ):
        moment = _exif_datetime(_text(raw), _text(offset))
        if moment is not None:
            return moment
    return None


def _exif_datetime(raw: str | None, offset: str | None) -> datetime | None:
    """EXIF's "YYYY:MM:DD HH:MM:SS" (camera local time), with its UTC offset when the file gives one."""
    if raw is None:
        return None
    try:
        moment = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00" and other placeholders
    if offset and len(offset) == 6 and offset[0] in "+-" and offset[3] == ":":
        try:
            delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        except ValueError:
            return moment
        return moment.replace(tzinfo=timezone(delta if offset[0] == "+" else -delta))
    return moment
