"""What flows between the pipeline's stages. Failures are values, not exceptions."""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from typing_extensions import dataclass_transform

_C = TypeVar("_C", bound=type[Any])


@dataclass_transform(frozen_default=True, eq_default=True)
def record(cls: _C) -> _C:
    """A value that flows between stages: a dataclass with slots, hashable and compared by value,
    and immutable as far as the type checker is concerned. Not frozen at run time: a frozen
    dataclass's __init__ sets each field through object.__setattr__, five times slower (1.3 µs
    for five fields instead of 0.25 µs), and a cold import makes five of these per file."""
    return dataclass(cls, slots=True, unsafe_hash=True)  # type: ignore[return-value]


def s64(value: int) -> int:
    """Inode and device numbers are unsigned 64-bit; catalog columns are signed. Wrap, losslessly."""
    return value - (1 << 64) if value >= 1 << 63 else value


def u64(value: int) -> int:
    """The inverse of `s64`: the kernel's unsigned value of a catalog column."""
    return value + (1 << 64) if value < 0 else value


@record
class FileStat:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def same_content_signature(self, other: FileStat) -> bool:
        """Size, mtime and identity unchanged: the quick check every scanner relies on."""
        return (self.size, self.mtime_ns, self.inode, self.dev) == (
            other.size,
            other.mtime_ns,
            other.inode,
            other.dev,
        )


def is_regular(st: os.stat_result) -> bool:
    return stat_mod.S_ISREG(st.st_mode)


@record
class FileRef:
    root_id: int
    root_name: str
    relpath: bytes


@record
class Candidate:
    """A path that may have changed (seen by reconcile or hinted by the watcher)."""

    ref: FileRef
    stat: FileStat


@record
class SettledFile:
    """Size, mtime and ctime unchanged for settle_seconds: safe to hash."""

    ref: FileRef
    stat: FileStat


@record
class HashedFile:
    ref: FileRef
    stat: FileStat
    blake3: str
    # False when the digest was taken from a row with the same inode identity (hard link, rename)
    hashed: bool = True


@record
class MovedFile:
    """A known row (by inode identity) now lives at `ref`: update it, never re-hash."""

    ref: FileRef
    stat: FileStat
    row_id: int
    blake3: str


@record
class FileFailure:
    ref: FileRef
    stat: FileStat | None
    reason: str


@record
class Unsettled:
    """Changed while being hashed: goes back to settling."""

    ref: FileRef


@record
class Vanished:
    """`ref` is gone; with subtree, everything below it is gone too."""

    ref: FileRef
    subtree: bool = False
    # When it was seen gone (0: unknown): a row written since then is a new file at the path
    # (a deletion waits for its burst to close, and a file may be put back meanwhile).
    at: float = 0.0


@record
class VanishedRows:
    """Paths of a root the reconcile walk no longer found. Only rows not written since the walk
    began (`last_seen < walk_started`) are marked: a row that moved to another path, or a new
    file registered at the same path meanwhile, is not what the walk missed."""

    root_id: int
    relpaths: tuple[bytes, ...]
    walk_started: float
    # The subtree the walk covered (b"": the whole root), or None: rows of it that a hold kept
    # and the walk found again are back, and their hold is released.
    walked: bytes | None = None


@record
class ConfirmHeld:
    """The operator confirms a root's held disappearance: its held rows become missing, with the
    time they vanished."""

    root_id: int


HashOutcome = HashedFile | FileFailure | Unsettled | Vanished
CatalogOp = HashedFile | MovedFile | FileFailure | Vanished | VanishedRows | ConfirmHeld


# A catalog row as a walk's read gives it: (relpath, *signature). Kept whole: building a folder's
# dict of rows is then a loop in C, not one tuple per row in Python.
KnownRow = tuple[bytes, int, int, int, int]


class KnownRows(Protocol):
    """The live rows of a root (or subtree) in relpath order, read in the walk's thread while the
    walk runs: a reconcile never holds all of a root's paths at once (a million rows would be
    ~280 MB as a dict)."""

    def in_error(self) -> list[bytes]:
        """The relpaths of the rows in error, sorted (few: each is a file that failed)."""
        ...

    def next_chunk(self) -> list[KnownRow] | None:
        """The next present rows, in relpath (byte) order; None once all are read."""
        ...

    def close(self) -> None:
        """Stop reading (a walk that ends early); safe to call twice."""
        ...
