"""extract_image on real files written by Pillow: facts, EXIF, hashes, near-duplicates, damage."""

from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from importd.media.failure import ExtractionFailure
from importd.media.hash_index import NEAR_DUPLICATE_MAX_DISTANCE
from importd.media.hashes import hamming
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, decode_upright_rgb, extract_image


@lru_cache(maxsize=32)
def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A photograph-like picture: smooth random colour fields, a few shapes, sensor noise.

    Drawn at 1/8 scale and enlarged (it is smooth anyway), which keeps tests fast.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    small_w, small_h = width // 8, height // 8
    y, x = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    channels = []
    for _ in range(3):
        field = np.zeros((small_h, small_w), np.float32)
        for _ in range(6):
            fx, fy = rng.uniform(0.5, 6, 2) * 2 * np.pi / np.array([small_w, small_h])
            field += rng.uniform(20, 60) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
        channels.append(field + rng.uniform(60, 190))
    pixels = np.stack(channels, axis=-1)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, small_w), rng.uniform(0, small_h), rng.uniform(3, 15)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(0, 255, 3)
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    big = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-4, 5, big.shape, dtype=np.int16)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8), "RGB")


def facts(path: Path | bytes) -> ImageFacts:
    result = extract_image(path if isinstance(path, bytes) else str(path), max_pixels=DEFAULT_MAX_PIXELS)
    assert isinstance(result, ImageFacts), result
    return result


def failure(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ExtractionFailure:
    result = extract_image(str(path), max_pixels=max_pixels)
    assert isinstance(result, ExtractionFailure), result
    assert result.extractor == "image"
    assert result.reason
    return result


def test_png_facts(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    photo(1).save(path)
    got = facts(path)
    assert (got.format, got.width, got.height, got.mode) == ("PNG", 640, 480, "RGB")
    assert got.taken_at is None and got.camera is None
    assert not got.low_detail
    assert -(2**63) <= got.phash < 2**63 and -(2**63) <= got.dhash < 2**63
    assert got.warnings == ()


def test_exif_orientation_date_and_camera(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° for display
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D Mark IV"
    exif.get_ifd(0x8769)[0x9003] = "2023:07:14 18:30:05"
    exif.get_ifd(0x8769)[0x9011] = "+02:00"
    path = tmp_path / "camera.jpg"
    photo(2).save(path, exif=exif, quality=92)
    got = facts(path)
    assert (got.width, got.height) == (480, 640)
    assert got.camera == "Canon EOS 5D Mark IV"
    assert got.taken_at == datetime(2023, 7, 14, 18, 30, 5, tzinfo=timezone(timedelta(hours=2)))


def test_orientation_applied_before_hashing(tmp_path: Path) -> None:
    """A picture stored sideways with an EXIF flag hashes like the same picture stored upright."""
    upright = photo(3)
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "flagged.jpg", exif=exif, quality=95)
    assert hamming(facts(tmp_path / "upright.jpg").phash, facts(tmp_path / "flagged.jpg").phash) <= 4


def test_placeholder_exif_date_is_ignored(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0132] = "0000:00:00 00:00:00"
    exif[0x0110] = "DSC-RX100"
    path = tmp_path / "p.jpg"
    photo(4).save(path, exif=exif)
    got = facts(path)
    assert got.taken_at is None
    assert got.camera == "DSC-RX100"


def test_sixteen_bit_greyscale_is_not_hashed_as_white(tmp_path: Path) -> None:
    grey = np.asarray(photo(5).convert("L"), dtype=np.uint16) * 257
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)  # Pillow writes mode I;16 / I as 16-bit PNG
    deep = facts(path)
    photo(5).convert("L").save(tmp_path / "eight.png")
    assert not deep.low_detail
    assert hamming(deep.phash, facts(tmp_path / "eight.png").phash) <= 4


def test_transparent_areas_are_flattened_on_white(tmp_path: Path) -> None:
    rgba = photo(6).convert("RGBA")
    alpha = np.full((480, 640), 255, np.uint8)
    alpha[:, :100] = 0  # a transparent strip holding arbitrary colour
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "cut.png")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    flat.save(tmp_path / "flat.jpg", quality=90)
    assert hamming(facts(tmp_path / "cut.png").phash, facts(tmp_path / "flat.jpg").phash) <= 4


def test_blank_picture_is_low_detail(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (12, 12, 12)).save(tmp_path / "black.png")
    assert facts(tmp_path / "black.png").low_detail


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_copies_match_and_different_pictures_do_not(tmp_path: Path, seed: int) -> None:
    original = photo(seed, (640, 480))
    original.save(tmp_path / "original.png")
    original.resize((320, 240), Image.Resampling.LANCZOS).save(tmp_path / "half.png")
    original.save(tmp_path / "q60.jpg", quality=60)
    original.resize((240, 180), Image.Resampling.BILINEAR).save(tmp_path / "small.jpg", quality=75)
    original.crop((13, 10, 627, 470)).save(tmp_path / "crop2pc.png")  # 2 % off each side
    original.convert("RGB").save(tmp_path / "copy.webp", quality=70)
    base = facts(tmp_path / "original.png").phash
    for copy in ("half.png", "q60.jpg", "small.jpg", "crop2pc.png", "copy.webp"):
        distance = hamming(base, facts(tmp_path / copy).phash)
        assert distance <= NEAR_DUPLICATE_MAX_DISTANCE, (copy, distance)
    for other_seed in (seed + 100, seed + 200, seed + 300):
        photo(other_seed, (640, 480)).save(tmp_path / "other.png")
        distance = hamming(base, facts(tmp_path / "other.png").phash)
        assert distance > NEAR_DUPLICATE_MAX_DISTANCE, (other_seed, distance)


def test_dhash_also_tracks_copies(tmp_path: Path) -> None:
    original = photo(21)
    original.save(tmp_path / "a.png")
    original.save(tmp_path / "b.jpg", quality=70)
    photo(22).save(tmp_path / "c.png")
    a, b, c = (facts(tmp_path / n).dhash for n in ("a.png", "b.jpg", "c.png"))
    assert hamming(a, b) < hamming(a, c)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "not an image format" in failure(tmp_path / "empty.jpg").reason


def test_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(20_000))
    failure(tmp_path / "noise.png")


def test_truncated_jpeg_and_png(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    photo(31).save(buffer, "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    assert "truncated" in failure(tmp_path / "cut.jpg").reason
    buffer = io.BytesIO()
    photo(31).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    failure(tmp_path / "cut.png")


def test_missing_file(tmp_path: Path) -> None:
    assert "FileNotFoundError" in failure(tmp_path / "gone.png").reason


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring `width`×`height`, with no pixel data behind it."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_decompression_bomb_far_over_the_limit(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(huge_png_header(100_000, 100_000))
    assert "decompression bomb guard" in failure(tmp_path / "bomb.png").reason


def test_decompression_bomb_just_over_our_limit(tmp_path: Path) -> None:
    photo(41, (400, 300)).save(tmp_path / "p.png")
    reason = failure(tmp_path / "p.png", max_pixels=100_000).reason
    assert "decompression bomb guard" in reason and "100000" in reason
    assert isinstance(extract_image(str(tmp_path / "p.png"), max_pixels=120_000), ImageFacts)


def test_pixel_limit_is_restored_afterwards(tmp_path: Path) -> None:
    saved = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(huge_png_header(50_000, 50_000))
    failure(tmp_path / "bomb.png", max_pixels=1000)
    assert saved == Image.MAX_IMAGE_PIXELS


def test_recoverable_damage_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    path = tmp_path / "p.jpg"
    photo(51).save(path, exif=exif)
    data = bytearray(path.read_bytes())
    marker = data.index(b"Exif\x00\x00")
    data[marker + 10 : marker + 14] = b"\xff\xff\xff\x7f"  # IFD offset pointing past the end
    path.write_bytes(bytes(data))
    got = facts(path)
    assert got.width == 640  # analysed despite the broken EXIF block


def test_non_utf8_path(tmp_path: Path) -> None:
    name = bytes(tmp_path) + b"/caf\xe9-\xff.png"
    photo(61).save(name.decode("utf-8", "surrogateescape"))
    assert facts(name).width == 640


def test_decode_upright_rgb_scales_and_orients(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "p.jpg"
    photo(71, (1600, 1200)).save(path, exif=exif, quality=80)
    decoded = decode_upright_rgb(str(path), max_pixels=DEFAULT_MAX_PIXELS, max_side=800, extractor="faces")
    assert not isinstance(decoded, ExtractionFailure)
    pixels, scale = decoded
    assert pixels.shape == (800, 600, 3) and pixels.dtype == np.uint8
    assert scale == pytest.approx(0.5)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff")
    bad = decode_upright_rgb(str(tmp_path / "bad.jpg"), max_pixels=10**8, max_side=800, extractor="faces")
    assert isinstance(bad, ExtractionFailure) and bad.extractor == "faces"
