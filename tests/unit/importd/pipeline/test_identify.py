"""identify: the pure match over scripted catalog rows and a scripted disk, then the adapters on a
real SQLite catalog and real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from importd.catalog.files import IdentityMatch
from importd.items import FileRef, FileStat, HashedFile, MovedFile, SettledFile
from importd.pipeline.identify import Identified, disk_view, identify, inodes_of

DIGEST = "ab" * 32


def settled(
    relpath: bytes, inode: int = 7, size: int = 10, mtime_ns: int = 100, root_id: int = 1
) -> SettledFile:
    return SettledFile(FileRef(root_id, "r", relpath), FileStat(size, mtime_ns, mtime_ns, inode, 5))


def row(
    relpath: bytes,
    inode: int = 7,
    size: int = 10,
    mtime_ns: int = 100,
    status: str = "present",
    blake3: str | None = DIGEST,
    row_id: int = 1,
    root_id: int = 1,
) -> IdentityMatch:
    return IdentityMatch(row_id, root_id, relpath, size, mtime_ns, inode, 5, blake3, status)


class ScriptedDisk:
    """Which rows' own paths are still their inode on disk; records what it was asked."""

    def __init__(self, present: set[bytes]) -> None:
        self.present = present
        self.asked: list[bytes] = []

    def __call__(self, m: IdentityMatch) -> bool:
        self.asked.append(m.relpath)
        return m.relpath in self.present


def test_no_known_inode_means_every_file_is_hashed() -> None:
    batch = [settled(b"a"), settled(b"b", inode=8)]
    out = identify(batch, [], ScriptedDisk(set()))
    assert out == Identified(to_hash=batch)


def test_unchanged_file_at_its_own_path_is_done_without_a_hash() -> None:
    out = identify([settled(b"a")], [row(b"a")], ScriptedDisk({b"a"}))
    assert out.done == [(1, b"a")] and not out.to_hash and not out.ops


def test_rename_keeps_the_row_and_its_digest() -> None:
    disk = ScriptedDisk(set())  # the old path is no longer that inode
    out = identify([settled(b"new")], [row(b"old", row_id=42)], disk)
    assert out.to_hash == []
    assert out.done == [(1, b"new")]
    (op,) = out.ops
    assert isinstance(op, MovedFile) and op.row_id == 42 and op.blake3 == DIGEST and op.ref.relpath == b"new"
    assert disk.asked == [b"old"]


def test_hard_link_takes_the_digest_without_reading_the_file() -> None:
    out = identify([settled(b"link")], [row(b"orig")], ScriptedDisk({b"orig"}))
    (op,) = out.ops
    assert isinstance(op, HashedFile) and op.hashed is False and op.blake3 == DIGEST
    assert out.done == [(1, b"link")]


@pytest.mark.parametrize(
    "changed",
    [
        {"size": 11},  # the content may have changed
        {"mtime_ns": 101},
        {"blake3": None},  # a row in error vouches for nothing
    ],
)
def test_rows_that_cannot_vouch_for_the_content_send_the_file_to_hashing(changed: dict[str, object]) -> None:
    known = row(b"old", **changed)  # type: ignore[arg-type]
    batch = [settled(b"new")]
    assert identify(batch, [known], ScriptedDisk(set())).to_hash == batch


def test_a_missing_row_at_the_same_path_is_a_move_back() -> None:
    out = identify([settled(b"a")], [row(b"a", status="missing", row_id=9)], ScriptedDisk(set()))
    assert out.to_hash == [settled(b"a")]  # same path, not present: hashed again, the writer revives it


def test_inode_lookup_keys_are_dev_and_inode() -> None:
    assert inodes_of([settled(b"a", inode=3), settled(b"b", inode=4)]) == [(5, 3), (5, 4)]


def test_disk_view_checks_the_rows_path_on_the_real_disk(tmp_path: Path) -> None:
    (tmp_path / "here").write_bytes(b"x")
    st = os.lstat(tmp_path / "here")
    on_disk = disk_view(lambda: {1: os.fsencode(tmp_path)})
    same = IdentityMatch(1, 1, b"here", 1, st.st_mtime_ns, st.st_ino, st.st_dev, DIGEST, "present")
    assert on_disk(same)
    assert not on_disk(IdentityMatch(1, 1, b"gone", 1, 0, st.st_ino, st.st_dev, DIGEST, "present"))
    assert not on_disk(IdentityMatch(1, 1, b"here", 1, 0, st.st_ino + 1, st.st_dev, DIGEST, "present"))
    assert not on_disk(IdentityMatch(1, 1, b"here", 1, 0, st.st_ino, st.st_dev, DIGEST, "missing"))
    # A root that is not configured now: its rows are not ours to move.
    assert on_disk(IdentityMatch(1, 2, b"gone", 1, 0, 1, 1, DIGEST, "present"))
