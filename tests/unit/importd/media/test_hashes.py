"""Hash storage in SQLite's signed 64-bit INTEGER and Hamming distance."""

from __future__ import annotations

import sqlite3

import imagehash
import numpy as np
from PIL import Image

from importd.media.hashes import from_imagehash, hamming, is_low_detail, to_signed64, to_unsigned64


def test_round_trip_through_sqlite() -> None:
    values = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0xDEAD_BEEF_0BAD_F00D]
    db = sqlite3.connect(":memory:")
    db.execute("create table h (v integer)")
    db.executemany("insert into h values (?)", [(to_signed64(v),) for v in values])
    stored = [row[0] for row in db.execute("select v from h order by rowid")]
    assert [to_unsigned64(v) for v in stored] == values
    assert all(-(2**63) <= v < 2**63 for v in stored)


def test_signed_form_is_the_int64_view_of_the_same_bits() -> None:
    value = 0xF0F0_0000_0000_0001
    assert np.array([value], dtype=np.uint64).view(np.int64)[0] == to_signed64(value)


def test_hamming_on_any_mix_of_forms() -> None:
    a, b = 2**64 - 1, 0
    assert hamming(a, b) == 64
    assert hamming(to_signed64(a), b) == 64
    assert hamming(to_signed64(2**63 | 5), 2**63 | 6) == 2


def test_bit_order_matches_imagehash_hex() -> None:
    picture = Image.effect_mandelbrot((128, 128), (-2.0, -1.5, 1.0, 1.5), 64)
    value = imagehash.phash(picture)
    assert f"{to_unsigned64(from_imagehash(value)):016x}" == str(value)
    other = imagehash.phash(picture.rotate(90))
    assert hamming(from_imagehash(value), from_imagehash(other)) == value - other


def test_low_detail() -> None:
    assert is_low_detail(Image.new("L", (100, 100), 128))
    assert not is_low_detail(Image.effect_mandelbrot((100, 100), (-2.0, -1.5, 1.0, 1.5), 64))
