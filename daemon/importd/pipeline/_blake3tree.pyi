# Types of the C extension built from _blake3tree.c.
from typing import Protocol

class _Stop(Protocol):
    def is_set(self) -> bool: ...

BLAKE3_VERSION: str

def hash_fd(fd: int, size: int, threads: int, stop: _Stop | None, /) -> tuple[str | None, int]: ...
