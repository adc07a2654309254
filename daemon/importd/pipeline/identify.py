"""Identify: what the catalog already knows of a settled file's inode decides whether it is hashed.

A rename or a move keeps the inode (and size and mtime), so a file whose (dev, inode) the catalog
knows under another path that is no longer that inode on disk *moved*: its row follows it, with no
re-hash. The same inode still in place under another path is a hard link of a file already hashed.
The same inode at the same path, unchanged, is a touch that changed nothing we compare.

The match is pure: it is given the catalog's rows for the batch's inodes (from any `InodeLookup`)
and a one-method view of the disk (`OnDisk`), so it is tested with scripted fakes. The adapters
below give it the catalog (an async engine on the event loop, or a read-only sqlite3 connection in
a walk's own thread) and the real disk.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog import files as catalog_files
from importd.catalog.files import IdentityMatch
from importd.items import CatalogOp, HashedFile, MovedFile, SettledFile, s64
from importd.paths import display

log = logging.getLogger("importd.pipeline")

Key = tuple[int, bytes]
Inode = tuple[int, int]  # (dev, inode), signed as the catalog stores them


class InodeLookup(Protocol):
    """What do you know of these inodes? Every catalog row (any status) with one of them."""

    def __call__(self, inodes: list[Inode], /) -> list[IdentityMatch]: ...


OnDisk = Callable[[IdentityMatch], bool]
"""Is this row's own path still that inode on disk?"""


@dataclass
class Identified:
    """The batch sorted: files to hash, catalog ops that need no hash, keys that are done."""

    to_hash: list[SettledFile] = field(default_factory=list)
    ops: list[CatalogOp] = field(default_factory=list)
    done: list[Key] = field(default_factory=list)


def inodes_of(batch: Sequence[SettledFile]) -> list[Inode]:
    return [(s.stat.dev, s.stat.inode) for s in batch]


def identify(batch: Sequence[SettledFile], matches: Sequence[IdentityMatch], on_disk: OnDisk) -> Identified:
    """What the catalog's rows with these inodes make of each file: unchanged (done), moved here
    or a hard link (an op, no hashing), or to be hashed."""
    by_inode: dict[Inode, list[IdentityMatch]] = {}
    for m in matches:
        by_inode.setdefault((m.dev, m.inode), []).append(m)
    if not by_inode:
        return Identified(to_hash=list(batch))
    out = Identified()
    for settled in batch:
        st = settled.stat
        key = (settled.ref.root_id, settled.ref.relpath)
        # Only rows with a hash and the same size and mtime vouch for the content.
        candidates = [
            m
            for m in by_inode.get((s64(st.dev), s64(st.inode)), [])
            if m.size == st.size and m.mtime_ns == st.mtime_ns and m.blake3
        ]
        if any((m.root_id, m.relpath) == key and m.status == "present" for m in candidates):
            out.done.append(key)
            continue
        elsewhere = [m for m in candidates if (m.root_id, m.relpath) != key]
        moved_from = next((m for m in elsewhere if not on_disk(m)), None)
        if moved_from is not None and moved_from.blake3:
            out.ops.append(MovedFile(settled.ref, st, moved_from.row_id, moved_from.blake3))
            log.info(
                "moved %s -> %s",
                display(moved_from.relpath),
                display(settled.ref.relpath),
                extra={"root": settled.ref.root_name, "path": display(settled.ref.relpath)},
            )
            out.done.append(key)
        elif elsewhere and elsewhere[0].blake3:
            # A hard link of a file we hashed: same inode, same size and mtime, same bytes.
            out.ops.append(HashedFile(settled.ref, st, elsewhere[0].blake3, hashed=False))
            out.done.append(key)
        else:
            out.to_hash.append(settled)
    return out


# ----- adapters ------------------------------------------------------------------------------


def disk_view(root_paths: Callable[[], Mapping[int, bytes]]) -> OnDisk:
    """The real disk: a row's path is still its inode when lstat says so. A row of a root that is
    not configured now is left alone (its rows are not ours to move)."""

    def on_disk(m: IdentityMatch) -> bool:
        if m.status == "missing":
            return False
        root = root_paths().get(m.root_id)
        if root is None:
            return True
        try:
            st = os.lstat(root + b"/" + m.relpath)
        except OSError:
            return False
        return (s64(st.st_ino), s64(st.st_dev)) == (m.inode, m.dev)

    return on_disk


def reader_lookup(reader: sqlite3.Connection, host: str) -> InodeLookup:
    """A read-only sqlite3 connection of a walk's own thread (no trip through the event loop)."""

    def lookup(inodes: list[Inode]) -> list[IdentityMatch]:
        return catalog_files.identities_sqlite(reader, inodes, host)

    return lookup


async def catalog_matches(engine: AsyncEngine, inodes: list[Inode], host: str) -> list[IdentityMatch]:
    """The same lookup on the event loop, over the catalog's async engine (any database)."""
    async with engine.connect() as conn:
        return await conn.run_sync(catalog_files.identities, inodes, host)
