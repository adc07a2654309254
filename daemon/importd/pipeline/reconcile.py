"""Reconcile: walk a root (or a subtree) and compare it with what the catalog knows.

The watcher is a hint; this walk is the truth. It runs at start-up, on `importctl scan`, after a
watcher failure and on a safety interval. It uses `os.scandir` with lstat only: symlinks are
never followed, so a link loop cannot trap it, and a bind-mount loop is caught by remembering the
(dev, inode) of every directory entered. Only what differs from the catalog by (size, mtime_ns,
inode, dev) goes on; files in error are always retried.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass, field

from importd.catalog.queries import KnownFile
from importd.config import IgnoreRules
from importd.pipeline.items import FileStat, s64


@dataclass(frozen=True, slots=True)
class WalkedFile:
    relpath: bytes
    # The lstat result as the walk got it; `stat` is built only for files that go on (most of a
    # restart's walk is unchanged files, and building 100,000 FileStats costs half the walk).
    raw: os.stat_result | FileStat

    @property
    def stat(self) -> FileStat:
        raw = self.raw
        return raw if isinstance(raw, FileStat) else FileStat.of(raw)

    def signature(self) -> tuple[int, int, int, int]:
        """(size, mtime_ns, inode, dev) as the catalog stores them (signed 64-bit)."""
        raw = self.raw
        if isinstance(raw, FileStat):
            return raw.size, raw.mtime_ns, s64(raw.inode), s64(raw.dev)
        ino, dev = raw.st_ino, raw.st_dev
        return (
            raw.st_size,
            raw.st_mtime_ns,
            ino if ino < SIGNED_LIMIT else s64(ino),
            dev if dev < SIGNED_LIMIT else s64(dev),
        )


@dataclass(frozen=True, slots=True)
class WalkedLink:
    relpath: bytes


@dataclass(frozen=True, slots=True)
class WalkError:
    """A directory or entry the walk could not read; nothing under it may be called missing."""

    relpath: bytes
    reason: str


WalkItem = WalkedFile | WalkedLink | WalkError


SIGNED_LIMIT = 1 << 63


def describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno == errno.EIO:
        return "input/output error (failing disk or network mount?)"
    if exc.errno == errno.ENAMETOOLONG:
        return "name too long"
    if exc.errno == errno.ESTALE:
        return "stale network file handle"
    return exc.strerror or str(exc)


def walk(root: bytes, start: bytes, ignore: IgnoreRules) -> Iterator[WalkItem]:
    """Depth-first walk below `root/start` (start may be b"" for the whole root)."""
    top = root + b"/" + start if start else root
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield WalkError(start, describe_os_error(exc))
        return
    if stat_mod.S_ISREG(st.st_mode):
        if start and not ignore.path_ignored(os.fsdecode(start)):
            yield WalkedFile(start, st)
        return
    if stat_mod.S_ISLNK(st.st_mode):
        yield WalkedLink(start)
        return
    if not stat_mod.S_ISDIR(st.st_mode):
        return
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    check_paths = ignore.has_path_globs
    stack: list[bytes] = [start]
    while stack:
        rel = stack.pop()
        path = root + b"/" + rel if rel else root
        prefix = rel + b"/" if rel else b""
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            yield WalkError(rel, describe_os_error(exc))
            continue
        for entry in entries:
            name = entry.name
            if ignore.name_ignored(os.fsdecode(name)):
                continue
            relpath = prefix + name
            if check_paths and ignore.path_ignored(os.fsdecode(relpath)):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    dst = entry.stat(follow_symlinks=False)
                    key = (dst.st_dev, dst.st_ino)
                    if key in visited:
                        yield WalkError(relpath, "directory loop (a bind mount of a parent?): not entered")
                        continue
                    visited.add(key)
                    stack.append(relpath)
                elif entry.is_symlink():
                    yield WalkedLink(relpath)
                else:
                    est = entry.stat(follow_symlinks=False)
                    if stat_mod.S_ISREG(est.st_mode):
                        yield WalkedFile(relpath, est)
            except FileNotFoundError:
                continue  # vanished between readdir and lstat: the watcher or next walk sees it
            except OSError as exc:
                yield WalkError(relpath, describe_os_error(exc))


@dataclass
class ReconcileDiff:
    """What a walk found that the catalog does not already know."""

    changed: list[WalkedFile] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)
    links: list[WalkedLink] = field(default_factory=list)
    seen: int = 0
    changed_count: int = 0


class ReconcileComparer:
    """Compares walk items against a catalog snapshot, one item at a time (so the walk can stream
    changed files onward while it is still going), then lists the vanished rows at the end."""

    def __init__(self, known: dict[bytes, KnownFile], keep_changed: bool = True) -> None:
        self.known = known
        # A reconcile streams changed files onward and only needs their count; keeping 100,000
        # stat results until the walk ends would cost tens of MB. A sweep keeps them to report.
        self.keep_changed = keep_changed
        self.diff = ReconcileDiff()
        self._seen_paths: set[bytes] = set()

    def feed(self, item: WalkItem) -> WalkedFile | None:
        """Returns the file when it must go on to settle/hash, else None."""
        if isinstance(item, WalkError):
            self.diff.errors.append(item)
            return None
        if isinstance(item, WalkedLink):
            self.diff.links.append(item)
            return None
        self.diff.seen += 1
        known = self.known.pop(item.relpath, None)
        if known is None or known.status != "present":
            self._changed(item)
            return item
        if (known.size, known.mtime_ns, known.inode, known.dev) != item.signature():
            self._changed(item)
            return item
        return None

    def _changed(self, item: WalkedFile) -> None:
        self.diff.changed_count += 1
        if self.keep_changed:
            self.diff.changed.append(item)

    def finish(self, ignore: IgnoreRules) -> ReconcileDiff:
        """Rows not seen are vanished, except below a directory the walk could not read and
        paths now ignored (an ignore rule added later hides files; it does not delete them)."""
        blocked = [e.relpath for e in self.diff.errors]
        for relpath, known in self.known.items():
            if any(relpath == b or relpath.startswith(b + b"/") or not b for b in blocked):
                continue
            if ignore.path_ignored(os.fsdecode(relpath)):
                continue
            self.diff.vanished.append(known.row_id)
        self.known = {}
        return self.diff
