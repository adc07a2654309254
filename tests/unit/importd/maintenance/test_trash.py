"""The orphan-link trash: moves only links, keeps their place, records and restores them."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from importd.maintenance.trash import RestoreFailure, RestoreResult, Trash, TrashFailure, TrashRecord

NOW = 1_714_550_400.0  # 2024-05-01 08:00 UTC


def b(path: Path) -> bytes:
    return os.fsencode(str(path))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    (media / "farm" / "sub").mkdir(parents=True)
    return media


def trashed(trash: Trash, root: Path, relpath: bytes, now: float = NOW, who: str = "alice") -> TrashRecord:
    record = trash.move_orphan("media", b(root), relpath, now, who=who)
    assert isinstance(record, TrashRecord), record
    return record


def test_orphan_to_trash_and_back(root: Path, tmp_path: Path) -> None:
    os.symlink("../../gone.mkv", root / "farm" / "sub" / "l")
    trash = Trash(tmp_path / "state")
    record = trashed(trash, root, b"farm/sub/l")
    expected = b(tmp_path / "state" / "trash" / "orphans" / "2024-05-01" / "media" / "farm" / "sub" / "l")
    assert record.trash_path == expected
    assert (record.id, record.target, record.who, record.when) == (1, b"../../gone.mkv", "alice", NOW)
    assert not os.path.lexists(root / "farm" / "sub" / "l")
    assert os.readlink(expected) == b"../../gone.mkv"
    assert trash.list() == [record]

    restored = trash.restore(1, NOW + 60, who="bob")
    assert isinstance(restored, RestoreResult)
    assert (restored.record.restored_at, restored.record.restored_by) == (NOW + 60, "bob")
    assert os.readlink(root / "farm" / "sub" / "l") == "../../gone.mkv"
    assert not os.path.lexists(expected)
    assert trash.list() == []
    assert [r.restored_by for r in trash.list(include_restored=True)] == ["bob"]
    again = trash.restore(1, NOW + 61)
    assert isinstance(again, RestoreFailure) and "already restored" in again.reason


def test_regular_files_are_never_trashed(root: Path, tmp_path: Path) -> None:
    (root / "farm" / "file.mkv").write_bytes(b"data")
    (root / "farm" / "dir").mkdir()
    trash = Trash(tmp_path / "state")
    for relpath in (b"farm/file.mkv", b"farm/dir"):
        failure = trash.move_orphan("media", b(root), relpath, NOW)
        assert isinstance(failure, TrashFailure) and "not a symlink" in failure.reason
    assert (root / "farm" / "file.mkv").read_bytes() == b"data"
    assert trash.list() == []


def test_refuses_paths_that_escape_the_trash(root: Path, tmp_path: Path) -> None:
    trash = Trash(tmp_path / "state")
    for root_name, relpath in (("media", b"../x"), ("media", b"/abs"), ("me/dia", b"x"), ("..", b"x")):
        failure = trash.move_orphan(root_name, b(root), relpath, NOW)
        assert isinstance(failure, TrashFailure) and failure.reason.startswith("refused"), (
            root_name,
            relpath,
        )


def test_stale_when_the_link_changed(root: Path, tmp_path: Path) -> None:
    os.symlink("now-elsewhere", root / "farm" / "l")
    trash = Trash(tmp_path / "state")
    failure = trash.move_orphan("media", b(root), b"farm/l", NOW, expected_target=b"gone")
    assert isinstance(failure, TrashFailure) and failure.reason.startswith("stale:")
    assert os.path.islink(root / "farm" / "l")
    gone = trash.move_orphan("media", b(root), b"farm/missing", NOW)
    assert isinstance(gone, TrashFailure) and gone.reason == "stale: the link is gone"


def test_restore_refuses_when_something_is_there_now(root: Path, tmp_path: Path) -> None:
    os.symlink("gone", root / "farm" / "l")
    trash = Trash(tmp_path / "state")
    record = trashed(trash, root, b"farm/l")
    (root / "farm" / "l").write_bytes(b"new file")
    failure = trash.restore(record.id, NOW)
    assert isinstance(failure, RestoreFailure) and "something now exists" in failure.reason
    assert (root / "farm" / "l").read_bytes() == b"new file"
    assert os.path.islink(os.fsdecode(record.trash_path))
    (root / "farm" / "l").unlink()
    (root / "farm").rename(root / "renamed")
    failure = trash.restore(record.id, NOW)
    assert isinstance(failure, RestoreFailure) and "no longer exists" in failure.reason
    assert isinstance(trash.restore(99, NOW), RestoreFailure)


def test_same_link_trashed_twice_in_a_day_keeps_both(root: Path, tmp_path: Path) -> None:
    trash = Trash(tmp_path / "state")
    os.symlink("first", root / "farm" / "l")
    one = trashed(trash, root, b"farm/l")
    os.symlink("second", root / "farm" / "l")
    two = trashed(trash, root, b"farm/l", NOW + 1)
    assert two.trash_path == one.trash_path + b"~2"
    assert (os.readlink(one.trash_path), os.readlink(two.trash_path)) == (b"first", b"second")
    assert [r.id for r in trash.list()] == [1, 2]
    # The next day goes in the next day's folder.
    os.symlink("third", root / "farm" / "l")
    three = trashed(trash, root, b"farm/l", NOW + 86400)
    assert b"/2024-05-02/media/farm/l" in three.trash_path


def test_raw_names_round_trip_through_the_ledger(root: Path, tmp_path: Path) -> None:
    name = b"farm/caf\xe9\nlink"
    os.symlink(b"tar\xffget", b(root) + b"/" + name)
    trash = Trash(tmp_path / "state")
    record = trashed(trash, root, name)
    ledger = (tmp_path / "state" / "trash" / "ledger.jsonl").read_bytes()
    assert ledger.count(b"\n") == 1 and ledger.isascii()
    (listed,) = Trash(tmp_path / "state").list()
    assert listed == record
    assert (listed.relpath, listed.target) == (name, b"tar\xffget")
    assert isinstance(trash.restore(record.id, NOW), RestoreResult)
    assert os.readlink(b(root) + b"/" + name) == b"tar\xffget"


def test_a_torn_ledger_line_is_skipped_and_not_glued_to(root: Path, tmp_path: Path) -> None:
    trash = Trash(tmp_path / "state")
    os.symlink("a", root / "farm" / "a")
    trashed(trash, root, b"farm/a")
    with open(trash.ledger, "ab") as fh:
        fh.write(b'{"event": "trash", "id": 7, "ro')  # a crash mid-write
    os.symlink("b", root / "farm" / "b")
    second = trashed(trash, root, b"farm/b")
    assert second.id == 2
    assert [r.id for r in trash.list()] == [1, 2]
    lines = (tmp_path / "state" / "trash" / "ledger.jsonl").read_bytes().splitlines()
    assert json.loads(lines[-1])["id"] == 2


def test_across_filesystems_the_link_is_recreated(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink("gone", root / "farm" / "l")
    os.utime(root / "farm" / "l", ns=(1_000_000_000, 2_000_000_000), follow_symlinks=False)

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    trash = Trash(tmp_path / "state")
    record = trashed(trash, root, b"farm/l")
    assert not os.path.lexists(root / "farm" / "l")
    assert os.readlink(record.trash_path) == b"gone"
    assert os.lstat(record.trash_path).st_mtime_ns == 2_000_000_000
    assert isinstance(trash.restore(record.id, NOW), RestoreResult)
    assert os.readlink(root / "farm" / "l") == "gone"


def test_without_hard_links_it_renames(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink("gone", root / "farm" / "l")

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    trash = Trash(tmp_path / "state")
    record = trashed(trash, root, b"farm/l")
    assert os.readlink(record.trash_path) == b"gone"
    assert not os.path.lexists(root / "farm" / "l")
