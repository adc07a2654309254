# Types of the C extension built from _scandir.c.
def scan_dir(
    path: bytes, prefix: bytes = ..., unseen: dict[bytes, tuple[bytes, int, int, int, int]] | None = None
) -> tuple[
    list[tuple[bytes, tuple[int, int, int, int], int]],
    list[tuple[bytes, int, int]],
    list[bytes],
    list[tuple[bytes, int]],
    int,
]: ...
