"""A read-only FUSE passthrough of a folder whose chosen files and folders fail with EIO, as a
failing disk's do: `python tools/eiofs.py BACKING MOUNTPOINT FAULTS` (in the foreground; the
fault harness, tools/faults.py, starts it and unmounts it).

FAULTS is a text file of relative paths, one a line, read again at every call: reading such a
file, or listing such a folder, fails with EIO; an empty file heals them all. Everything else
(lstat with the backing inode numbers, readlink, statfs) is the backing folder's own.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from mfusepy import FUSE, FuseOSError, Operations

STAT_FIELDS = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
)


class FailingPassthrough(Operations):  # type: ignore[misc]  (mfusepy has no type hints)
    use_ns = True

    def __init__(self, backing: str, faults: str) -> None:
        self.backing = backing
        self.faults = faults

    def _path(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _check(self, path: str) -> None:
        try:
            with open(self.faults, encoding="utf-8", errors="surrogateescape") as fh:
                failing = {line.strip().strip("/") for line in fh if line.strip()}
        except FileNotFoundError:
            return
        if path.strip("/") in failing:
            raise FuseOSError(errno.EIO)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.lstat(self._path(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from exc
        attrs = {name.replace("_ns", ""): getattr(st, name) for name in STAT_FIELDS}
        return attrs

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        self._check(path)
        # With use_ino each entry needs its inode number: the C library skips entries of inode 0.
        out = []
        for entry in os.scandir(self._path(path)):
            st = entry.stat(follow_symlinks=False)
            out.append((entry.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
        return out

    def readlink(self, path: str) -> str:
        return os.readlink(self._path(path))

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise FuseOSError(errno.EROFS)
        try:
            return os.open(self._path(path), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise FuseOSError(exc.errno) from exc

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._check(path)
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {
            name: getattr(st, name) for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail")
        }


def main(argv: list[str]) -> int:
    backing, mountpoint, faults = (os.path.abspath(a) for a in argv)
    # use_ino: the backing inode numbers, which importd keys renames and identity on; direct_io and
    # no kernel cache, so every read reaches us and a healed file reads right at once.
    FUSE(
        FailingPassthrough(backing, faults),
        mountpoint,
        foreground=True,
        ro=True,
        use_ino=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        fsname="importd-eio",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
