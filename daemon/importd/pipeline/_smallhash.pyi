# Types of the C extension built from _smallhash.c (small files read whole and hashed).
from collections.abc import Sequence
from typing import Any

def read_small(
    root: bytes, files: Sequence[tuple[bytes, int, int, int, int, int] | Any], /
) -> list[str | int | tuple[str, int]]: ...
