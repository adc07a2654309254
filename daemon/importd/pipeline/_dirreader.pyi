# Types of the C extension built from _dirreader.c (the reconcile walk's directory reader).
class DirFiles:
    def take(
        self, prefix: bytes, unseen: dict[bytes, tuple[bytes, int, int, int, int]] | None = None, /
    ) -> tuple[list[tuple[bytes, tuple[int, int, int, int], int]], int]: ...
    def __len__(self) -> int: ...

def read_dirs(
    paths: list[bytes], /
) -> list[tuple[DirFiles, list[tuple[bytes, int, int]], list[bytes], list[tuple[bytes, int]]] | OSError]: ...
