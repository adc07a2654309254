"""The pHash and dHash `extract_image` gives are the ones image extractor version 1 stored.

Stored hashes are compared with new ones in the near-duplicate index, so a change to the decode path
(the reduced-size JPEG decode, the thumbnail, the hash library, a Pillow upgrade whose decoders give
other pixels) must either keep every bit or bump the extractor's version in `versions.py`, which
re-extracts every image in the background. These tests pin version 1's values: for every Pillow corpus
file it reads (`image_hashes_v1.json`, all formats), and for generated 12-megapixel camera JPEGs, which
it decodes at a quarter of their size.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from importd.media.hashes import from_imagehash, hamming
from importd.media.image import DEFAULT_MAX_PIXELS, ImageFacts, extract_image
from importd.media.versions import EXTRACTOR_VERSIONS
from tests.camera_photos import camera_picture, save_camera_jpeg
from tests.conftest import CORPUS

PINNED = Path(__file__).with_name("image_hashes_v1.json")
PILLOW_IMAGES = CORPUS / "pillow-images"

# (seed, EXIF orientation) -> (pHash, dHash) as version 1 stores them.
CAMERA_JPEGS = {
    (1, 1): (-9193853535784349113, 2415852020026922732),
    (2, 6): (-8770408962222621806, 7688587697562768461),
}


def facts(path: Path) -> ImageFacts:
    result = extract_image(str(path), max_pixels=DEFAULT_MAX_PIXELS)
    assert isinstance(result, ImageFacts), (path, result)
    return result


def test_the_pins_belong_to_the_current_version() -> None:
    """Bumping the image extractor's version means pinning its hashes anew, in a file named for it."""
    assert EXTRACTOR_VERSIONS["image"] == 1


@pytest.mark.skipif(not PILLOW_IMAGES.is_dir(), reason=f"corpus not found at {PILLOW_IMAGES}")
def test_corpus_hashes_are_the_ones_version_1_stored(tmp_path: Path) -> None:
    pinned: dict[str, list[int]] = json.loads(PINNED.read_text())["hashes"]
    assert len(pinned) > 800
    changed = {}
    for name, (phash, dhash) in pinned.items():
        copy = tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PILLOW_IMAGES / name, copy)
        got = facts(copy)
        if (got.phash, got.dhash) != (phash, dhash):
            changed[name] = (hamming(got.phash, phash), hamming(got.dhash, dhash))
    assert changed == {}, f"{len(changed)} files hash differently (bits of pHash, dHash): {changed}"


@pytest.mark.parametrize(("seed", "orientation"), sorted(CAMERA_JPEGS))
def test_camera_jpegs_hash_as_version_1_and_read_their_exif(
    tmp_path: Path, seed: int, orientation: int
) -> None:
    path = save_camera_jpeg(camera_picture(seed), tmp_path / f"IMG_{seed:04d}.JPG", orientation=orientation)
    got = facts(path)
    assert (got.phash, got.dhash) == CAMERA_JPEGS[(seed, orientation)]
    assert (got.format, got.mode, got.low_detail, got.warnings) == ("JPEG", "RGB", False, ())
    assert (got.width, got.height) == ((3000, 4000) if orientation == 6 else (4000, 3000))
    assert got.camera == "Canon EOS 450D"
    assert got.taken_at == datetime(2019, 7, 14, 16, 20, 5, tzinfo=timezone(timedelta(hours=2)))


def test_the_reduced_size_decode_hashes_like_the_full_picture(tmp_path: Path) -> None:
    """Decoding at a quarter of the size costs a few bits at most against the naive full-size hash."""
    path = save_camera_jpeg(camera_picture(3), tmp_path / "IMG_0003.JPG")
    with Image.open(path) as im:
        full = from_imagehash(imagehash.phash(im))
    with Image.open(path) as im:
        im.draft(None, (512, 512))  # what extract_image asks for
        assert im.size == (1000, 750)  # the JPEG decoder's 1/4 scale: the full pixels never exist
    assert hamming(facts(path).phash, full) <= 4


@pytest.mark.skipif(not PILLOW_IMAGES.is_dir(), reason=f"corpus not found at {PILLOW_IMAGES}")
def test_the_files_a_worker_opened_before_do_not_change_how_a_file_reads(tmp_path: Path) -> None:
    """In a fresh process (a new pool worker), a TGA first: pillow.ico must still read as an ICO."""
    for name in ("200x32_p_bl_raw_origin.tga", "pillow.ico"):
        shutil.copyfile(PILLOW_IMAGES / name, tmp_path / name)
    script = (
        "import sys\n"
        "from importd.media.image import DEFAULT_MAX_PIXELS, extract_image\n"
        "for path in sys.argv[1:]:\n"
        "    print(extract_image(path, max_pixels=DEFAULT_MAX_PIXELS))\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "200x32_p_bl_raw_origin.tga"),
            str(tmp_path / "pillow.ico"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    tga, ico = run.stdout.splitlines()
    assert tga.startswith("ImageFacts(format='TGA'") and ico.startswith("ImageFacts(format='ICO'"), run.stdout
    phash, dhash = json.loads(PINNED.read_text())["hashes"]["pillow.ico"]
    assert f"phash={phash}, dhash={dhash}" in ico
