"""64-bit perceptual hashes: computing them, storing them in SQLite, and comparing them.

SQLite's INTEGER is a signed 64-bit number, so a hash is kept as the two's-complement reading of its
64 bits (`to_signed64`): the same eight bytes, so `numpy.uint64` and `numpy.int64` views of a column
agree, and XOR-then-popcount gives the Hamming distance whichever reading each side uses. Bit order
follows imagehash: the first cell of its boolean matrix is the most significant bit, so
`f"{to_unsigned64(h):016x}"` equals `str(imagehash_value)`.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63


def to_signed64(value: int) -> int:
    """Map an unsigned 64-bit value into SQLite's signed INTEGER range (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value & _SIGN64 else value


def to_unsigned64(value: int) -> int:
    """Inverse of `to_signed64`; also accepts a value that is already unsigned."""
    return value & _MASK64


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes, signed or unsigned."""
    return ((a ^ b) & _MASK64).bit_count()


def from_imagehash(value: imagehash.ImageHash) -> int:
    """imagehash's 8×8 boolean matrix as a signed 64-bit integer."""
    bits = np.asarray(value.hash, dtype=bool).ravel()
    if bits.size != 64:
        raise ValueError(f"expected a 64-bit hash, got {bits.size} bits")
    return to_signed64(int.from_bytes(np.packbits(bits).tobytes(), "big"))


def perceptual_hashes(image: Image.Image) -> tuple[int, int]:
    """(pHash, dHash) of an image, both signed 64-bit integers."""
    return from_imagehash(imagehash.phash(image)), from_imagehash(imagehash.dhash(image))


def is_low_detail(image: Image.Image, *, min_stddev: float = 3.0) -> bool:
    """True for near-uniform pictures (blank pages, black frames).

    Their pHash is decided by rounding noise, so any two of them look like near-duplicates; callers
    leave them out of near-duplicate groups. 3 grey levels of standard deviation at 32×32 separates a
    flat or faintly noisy fill from any picture with visible content.
    """
    small = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    return float(np.asarray(small, dtype=np.float32).std()) < min_stddev
