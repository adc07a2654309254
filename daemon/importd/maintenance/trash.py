"""The trash for orphan symlinks: moved aside, recorded, restorable. Nothing is ever deleted.

Under the state dir:
    trash/orphans/<YYYY-MM-DD>/<root name>/<relpath>   the links, keeping their place in the tree
    trash/ledger.jsonl                                  one JSON object per move or restore

Only symlinks go in; a regular file is refused. A move never overwrites: it hard-links the link
itself to its new name (which fails if the name is taken) and then unlinks the old name; across
filesystems it recreates the link (a symlink is only its target) and unlinks the original. The
ledger is appended under an flock with fsync, one `write` per line; paths in it use the wire
spelling (lossless for any byte name) and `list` skips a line torn by a crash.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import json
import os
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, tzinfo
from typing import Any

from importctl.protocol import iso_utc
from importd.maintenance.links import fsync_dir
from importd.maintenance.stamps import day, iso
from importd.paths import display, from_wire, join, wire
from importd.pipeline.reconcile import describe_os_error

_NO_HARD_LINKS = (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass(frozen=True, slots=True)
class TrashRecord:
    id: int
    root_name: str
    relpath: bytes
    original: bytes
    trash_path: bytes
    target: bytes
    when: float
    who: str
    restored_at: float | None = None
    restored_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "root": self.root_name,
            "relpath": wire(self.relpath),
            "original": wire(self.original),
            "trash_path": wire(self.trash_path),
            "target": wire(self.target),
            "when": self.when,
            "who": self.who,
            "restored_at": self.restored_at,
            "restored_by": self.restored_by,
        }


@dataclass(frozen=True, slots=True)
class TrashFailure:
    path: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RestoreResult:
    record: TrashRecord


@dataclass(frozen=True, slots=True)
class RestoreFailure:
    id: int
    reason: str


def unsafe_relpath(relpath: bytes) -> str | None:
    """Why `relpath` cannot be placed below a folder (absolute, empty, or with . or ..)."""
    if not relpath or relpath.startswith(b"/"):
        return "not a relative path"
    if any(part in (b"", b".", b"..") for part in relpath.split(b"/")):
        return "empty, '.' or '..' path component"
    return None


class Trash:
    def __init__(self, state_dir: str | bytes | os.PathLike[str], tz: tzinfo = UTC) -> None:
        self.root = os.fsencode(state_dir) + b"/trash"
        self.ledger = self.root + b"/ledger.jsonl"
        self.tz = tz

    def move_orphan(
        self,
        root_name: str,
        root_path: bytes,
        relpath: bytes,
        now: float,
        *,
        who: str = "",
        expected_target: bytes | None = None,
    ) -> TrashRecord | TrashFailure:
        """Move the link at `root_path/relpath` into today's trash folder. With `expected_target`,
        refuse when the link now points elsewhere (the proposal is stale)."""
        original = join(root_path, relpath)
        bad = unsafe_relpath(relpath)
        if root_name in ("", ".", "..") or "/" in root_name:
            bad = f"root name {root_name!r} cannot name a folder"
        if bad is not None:
            return TrashFailure(original, f"refused: {bad}")
        try:
            st = os.lstat(original)
        except FileNotFoundError:
            return TrashFailure(original, "stale: the link is gone")
        except OSError as exc:
            return TrashFailure(original, describe_os_error(exc))
        if not stat_mod.S_ISLNK(st.st_mode):
            return TrashFailure(original, "refused: not a symlink (only links go to the trash)")
        try:
            target = os.readlink(original)
        except OSError as exc:
            return TrashFailure(original, describe_os_error(exc))
        if expected_target is not None and target != expected_target:
            return TrashFailure(original, f"stale: the link now points to {display(target)}")
        try:
            with self._locked() as fd:
                records = self._read()
                record_id = max((r.id for r in records), default=0) + 1
                base = b"/".join(
                    [self.root, b"orphans", day(now, self.tz).encode(), os.fsencode(root_name), relpath]
                )
                os.makedirs(os.path.dirname(base), mode=0o750, exist_ok=True)
                problem, trash_path = _move_aside(original, base, target, st)
                if problem is not None:
                    return TrashFailure(original, problem)
                record = TrashRecord(record_id, root_name, relpath, original, trash_path, target, now, who)
                event = {"event": "trash", "time": iso(now, self.tz), **record.to_json()}
                try:
                    _append(fd, event)
                except OSError as exc:
                    undo = _move_link(trash_path, original, target, st)
                    where = "left in place" if undo is None else f"now at {display(trash_path)}"
                    return TrashFailure(
                        original, f"ledger not written ({describe_os_error(exc)}): link {where}"
                    )
        except OSError as exc:
            return TrashFailure(original, f"trash unavailable: {describe_os_error(exc)}")
        fsync_dir(os.path.dirname(original))
        fsync_dir(os.path.dirname(trash_path))
        return record

    def restore(self, record_id: int, now: float, *, who: str = "") -> RestoreResult | RestoreFailure:
        """Put a trashed link back where it was; refuses when something now exists there."""
        try:
            with self._locked() as fd:
                record = next((r for r in self._read() if r.id == record_id), None)
                if record is None:
                    return RestoreFailure(record_id, f"no trash record {record_id}")
                if record.restored_at is not None:
                    return RestoreFailure(record_id, f"already restored ({iso_utc(record.restored_at)})")
                original = record.original
                if os.path.lexists(original):
                    return RestoreFailure(
                        record_id, f"something now exists at {display(original)}: not restored"
                    )
                if not os.path.isdir(os.path.dirname(original)):
                    folder = display(os.path.dirname(original))
                    return RestoreFailure(record_id, f"the folder {folder} no longer exists: not restored")
                try:
                    st = os.lstat(record.trash_path)
                except OSError as exc:
                    reason = (
                        f"trashed link unavailable at {display(record.trash_path)}: {describe_os_error(exc)}"
                    )
                    return RestoreFailure(record_id, reason)
                if not stat_mod.S_ISLNK(st.st_mode):
                    return RestoreFailure(record_id, f"{display(record.trash_path)} is no longer a symlink")
                problem = _move_link(record.trash_path, original, record.target, st)
                if problem is not None:
                    return RestoreFailure(record_id, problem)
                event = {
                    "event": "restore",
                    "id": record_id,
                    "when": now,
                    "time": iso(now, self.tz),
                    "who": who,
                }
                try:
                    _append(fd, event)
                except OSError as exc:
                    _move_link(original, record.trash_path, record.target, st)
                    return RestoreFailure(
                        record_id, f"ledger not written ({describe_os_error(exc)}): not restored"
                    )
        except OSError as exc:
            return RestoreFailure(record_id, f"trash unavailable: {describe_os_error(exc)}")
        fsync_dir(os.path.dirname(original))
        return RestoreResult(replace(record, restored_at=now, restored_by=who))

    @contextmanager
    def _locked(self) -> Iterator[int]:
        os.makedirs(self.root, mode=0o750, exist_ok=True)
        fd = os.open(self.ledger, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def _read(self) -> builtins.list[TrashRecord]:
        try:
            with open(self.ledger, "rb") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return []
        records: dict[int, TrashRecord] = {}
        for line in lines:
            try:
                event = json.loads(line)
                if event["event"] == "trash":
                    record = _record_of(event)
                    records[record.id] = record
                elif event["event"] == "restore" and event["id"] in records:
                    rid = event["id"]
                    records[rid] = replace(
                        records[rid], restored_at=float(event["when"]), restored_by=event["who"]
                    )
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash; the next append starts on a fresh line
        return sorted(records.values(), key=lambda r: r.id)

    def list(self, *, include_restored: bool = False) -> builtins.list[TrashRecord]:
        """What is in the trash now (with `include_restored`, also what was put back)."""
        return [r for r in self._read() if include_restored or r.restored_at is None]


def _record_of(event: dict[str, Any]) -> TrashRecord:
    return TrashRecord(
        id=int(event["id"]),
        root_name=str(event["root"]),
        relpath=from_wire(event["relpath"]),
        original=from_wire(event["original"]),
        trash_path=from_wire(event["trash_path"]),
        target=from_wire(event["target"]),
        when=float(event["when"]),
        who=str(event["who"]),
    )


def _append(fd: int, event: dict[str, Any]) -> None:
    data = (json.dumps(event, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data  # the previous write was torn: do not glue this record to it
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _move_aside(original: bytes, base: bytes, target: bytes, st: os.stat_result) -> tuple[str | None, bytes]:
    """Move to `base`, or to `base~2`, `base~3`… when the same link was trashed before that day."""
    for n in range(1, 10_000):
        candidate = base if n == 1 else base + b"~" + str(n).encode()
        if os.path.lexists(candidate):
            continue
        problem = _move_link(original, candidate, target, st)
        if problem is not None and os.path.lexists(candidate) and os.path.lexists(original):
            continue  # the name was taken meanwhile: try the next one
        return problem, candidate
    return "too many trashed links with this name today", base


def _move_link(src: bytes, dst: bytes, target: bytes, st: os.stat_result) -> str | None:
    """Move the symlink `src` to `dst` without ever replacing something at `dst`."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        return f"something already exists at {display(dst)}"
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return _recreate(src, dst, target, st)
        if exc.errno not in _NO_HARD_LINKS:
            return describe_os_error(exc)
        if os.path.lexists(dst):  # no hard links here: rename, after checking the name is free
            return f"something already exists at {display(dst)}"
        try:
            os.rename(src, dst)
        except OSError as err:
            return describe_os_error(err)
        return None
    try:
        os.unlink(src)
    except OSError as exc:
        os.unlink(dst)  # our own second name for the same link: the original stays as it was
        return describe_os_error(exc)
    return None


def _recreate(src: bytes, dst: bytes, target: bytes, st: os.stat_result) -> str | None:
    """Across filesystems: the same link anew (target, times, owner when allowed), then unlink."""
    try:
        os.symlink(target, dst)
    except FileExistsError:
        return f"something already exists at {display(dst)}"
    except OSError as exc:
        return describe_os_error(exc)
    try:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        os.lchown(dst, st.st_uid, st.st_gid)
    except OSError:
        pass  # the target is what matters; times and owner are kept when allowed
    try:
        os.unlink(src)
    except OSError as exc:
        os.unlink(dst)
        return describe_os_error(exc)
    return None
