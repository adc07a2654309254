"""Reconcile: walk a root (or a subtree) and compare it with what the catalog knows.

The watcher is a hint; this walk is the truth. It runs at start-up, on `importctl scan`, after a
watcher failure and on a safety interval. It reads directories with lstat only (the C reader
`_dirreader`, or `os.scandir` where it is not built): symlinks are never followed, so a link loop
cannot trap it, and a bind-mount loop is caught by remembering the (dev, inode) of every directory
entered. Only what differs from the catalog by (size, mtime_ns, inode, dev) goes on; files in error
are always retried.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, cast

from importd.config import IgnoreRules
from importd.items import CatalogSnapshot, FileStat, KnownRow, record, s64

# (size, mtime_ns, inode, dev) as the catalog stores them: inode and dev as signed 64-bit.
Signature = tuple[int, int, int, int]


_U64 = 1 << 64


@record
class WalkedFile:
    relpath: bytes
    signature: Signature
    ctime_ns: int

    @property
    def stat(self) -> FileStat:
        size, mtime_ns, inode, dev = self.signature
        # `% 2**64` is `u64` inline: a cold import asks this 100,000 times.
        return FileStat(size, mtime_ns, self.ctime_ns, inode % _U64, dev % _U64)

    @classmethod
    def of(cls, relpath: bytes, st: os.stat_result) -> WalkedFile:
        return cls(relpath, (st.st_size, st.st_mtime_ns, s64(st.st_ino), s64(st.st_dev)), st.st_ctime_ns)


@record
class WalkedLink:
    relpath: bytes


@record
class WalkError:
    """A directory or entry the walk could not read; nothing under it may be called missing."""

    relpath: bytes
    reason: str


WalkItem = WalkedFile | WalkedLink | WalkError


# Linux's PATH_MAX, with the closing NUL: a path handed to a system call is at most 4095 bytes.
PATH_MAX = 4096
TOO_LONG = f"path longer than PATH_MAX ({PATH_MAX} bytes) or a name longer than 255 bytes: not catalogued"


def too_long(root: bytes, relpath: bytes) -> bool:
    """Would `root/relpath` be refused by every system call that takes a path (ENAMETOOLONG)?"""
    return len(root) + 1 + len(relpath) >= PATH_MAX


def describe_os_error(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    if exc.errno == errno.EIO:
        return "input/output error (failing disk or network mount?)"
    if exc.errno == errno.ENAMETOOLONG:
        return TOO_LONG
    if exc.errno == errno.ESTALE:
        return "stale network file handle"
    return exc.strerror or str(exc)


FileEntry = tuple[bytes, Signature, int]  # (name, signature, ctime_ns)


class DirFiles(Protocol):
    """The regular files of one directory read (`_dirreader.DirFiles`, or `_PyDirFiles`)."""

    def take(
        self, prefix: bytes, unseen: dict[bytes, KnownRow] | None = None, /
    ) -> tuple[list[FileEntry], int]:
        """(files, unchanged): all files; or, with the catalog's `unseen` rows, each file's
        relpath popped from it and only those that differ listed, the rest counted."""
        ...

    def __len__(self) -> int: ...


DirRead = tuple[DirFiles, list[tuple[bytes, int, int]], list[bytes], list[tuple[bytes, int]]]
ReadDirs = Callable[[list[bytes]], list["DirRead | OSError"]]
# Directories read per call: one GIL release for all of them.
READ_BATCH = 64


class _PyDirFiles:
    def __init__(self, files: list[FileEntry]) -> None:
        self._files = files

    def take(
        self, prefix: bytes, unseen: dict[bytes, KnownRow] | None = None, /
    ) -> tuple[list[FileEntry], int]:
        if unseen is None:
            return list(self._files), 0
        out: list[FileEntry] = []
        for entry in self._files:
            known = unseen.pop(prefix + entry[0], None)
            if known is None or known[1:] != entry[1]:
                out.append(entry)
        return out, len(self._files) - len(out)

    def __len__(self) -> int:
        return len(self._files)


def _read_dirs_python(paths: list[bytes]) -> list[DirRead | OSError]:
    """What `_dirreader.read_dirs` returns, with os.scandir: the fallback when the extension is
    not built, and the reference it is tested against."""
    out: list[DirRead | OSError] = []
    for path in paths:
        try:
            out.append(_read_dir_python(path))
        except OSError as exc:
            out.append(exc)
    return out


def _read_dir_python(path: bytes) -> DirRead:
    files: list[FileEntry] = []
    dirs: list[tuple[bytes, int, int]] = []
    links: list[bytes] = []
    errors: list[tuple[bytes, int]] = []
    with os.scandir(path) as it:
        entries = list(it)
    for entry in entries:
        try:
            if entry.is_symlink():
                links.append(entry.name)
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # vanished between readdir and lstat: the watcher or next walk sees it
        except OSError as exc:
            errors.append((entry.name, exc.errno or 0))
            continue
        if stat_mod.S_ISREG(st.st_mode):
            signature = (st.st_size, st.st_mtime_ns, s64(st.st_ino), s64(st.st_dev))
            files.append((entry.name, signature, st.st_ctime_ns))
        elif stat_mod.S_ISDIR(st.st_mode):
            dirs.append((entry.name, st.st_dev, st.st_ino))
        elif stat_mod.S_ISLNK(st.st_mode):
            links.append(entry.name)
    return _PyDirFiles(files), dirs, links, errors


def _native_read_dirs() -> ReadDirs | None:
    try:
        from importd.pipeline._dirreader import read_dirs as native
    except ImportError:  # not compiled (a source checkout without a build): same results, slower
        return None
    return cast(ReadDirs, native)  # its DirFiles satisfies the protocol; lists are invariant


read_dirs: ReadDirs = _native_read_dirs() or _read_dirs_python


@dataclass(frozen=True, slots=True)
class DirListing:
    """One directory as the walk read it. Its files stay with the reader until `take`: before
    the catalog snapshot is there, a walk can run ahead without building an object per file.
    Links and errors carry whole relpaths."""

    prefix: bytes
    pending: DirFiles | None
    ignore: IgnoreRules
    links: list[WalkedLink] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)

    def take(self, unseen: dict[bytes, KnownRow] | None = None) -> tuple[list[FileEntry], int]:
        """(files that pass the ignore rules, files found unchanged in `unseen`)."""
        if self.pending is None:
            return [], 0
        files, unchanged = self.pending.take(self.prefix, unseen)
        if files and (ignored := self.ignore.name_ignored_bytes) is not None:
            files = [f for f in files if not ignored(f[0])]
        if files and self.ignore.has_path_globs:
            files = [f for f in files if not self.ignore.path_ignored(os.fsdecode(self.prefix + f[0]))]
        return files, unchanged

    def __len__(self) -> int:
        return len(self.pending) if self.pending is not None else 0


class _OneFile:
    def __init__(self, entry: FileEntry) -> None:
        self.entry = entry

    def take(
        self, prefix: bytes, unseen: dict[bytes, KnownRow] | None = None, /
    ) -> tuple[list[FileEntry], int]:
        return _PyDirFiles([self.entry]).take(prefix, unseen)

    def __len__(self) -> int:
        return 1


def walk_listings(
    root: bytes, start: bytes, ignore: IgnoreRules, reader: ReadDirs | None = None
) -> Iterator[DirListing]:
    """Depth-first walk below `root/start` (start may be b"" for the whole root), one listing
    per directory."""
    reader = reader or read_dirs
    top = root + b"/" + start if start else root
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield DirListing(b"", None, ignore, errors=[WalkError(start, describe_os_error(exc))])
        return
    if stat_mod.S_ISREG(st.st_mode):
        if start and not ignore.path_ignored(os.fsdecode(start)):
            head, _, name = start.rpartition(b"/")
            walked = WalkedFile.of(start, st)
            one = _OneFile((name, walked.signature, walked.ctime_ns))
            yield DirListing(head + b"/" if head else b"", one, IgnoreRules(()))
        return
    if stat_mod.S_ISLNK(st.st_mode):
        yield DirListing(b"", None, ignore, links=[WalkedLink(start)])
        return
    if not stat_mod.S_ISDIR(st.st_mode):
        return
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    stack: list[bytes] = [start]
    while stack:
        batch = [stack.pop() for _ in range(min(len(stack), READ_BATCH))]
        reads = reader([root + b"/" + rel if rel else root for rel in batch])
        for rel, read in zip(batch, reads, strict=True):
            yield _listing(rel, read, ignore, visited, stack)


def _listing(
    rel: bytes,
    read: DirRead | OSError,
    ignore: IgnoreRules,
    visited: set[tuple[int, int]],
    stack: list[bytes],
) -> DirListing:
    """One read as a listing; its subdirectories go on the stack (each (dev, inode) once)."""
    prefix = rel + b"/" if rel else b""
    if isinstance(read, OSError):
        return DirListing(prefix, None, ignore, errors=[WalkError(rel, describe_os_error(read))])
    files, dirs, links, errors = read
    listing = DirListing(prefix, files, ignore)
    for name, errno_value in errors:
        if not _skipped(ignore, prefix + name):
            listing.errors.append(WalkError(prefix + name, describe_os_error(OSError(errno_value, ""))))
    for name in links:
        if not _skipped(ignore, prefix + name):
            listing.links.append(WalkedLink(prefix + name))
    for name, dev, ino in reversed(dirs):  # reversed: the stack pops them in readdir order
        relpath = prefix + name
        if _skipped(ignore, relpath):
            continue
        if (dev, ino) in visited:
            loop = WalkError(relpath, "directory loop (a bind mount of a parent?): not entered")
            listing.errors.append(loop)
            continue
        visited.add((dev, ino))
        stack.append(relpath)
    return listing


def _skipped(ignore: IgnoreRules, relpath: bytes) -> bool:
    name = relpath.rpartition(b"/")[2]
    if ignore.name_ignored(os.fsdecode(name)):
        return True
    return ignore.has_path_globs and ignore.path_ignored(os.fsdecode(relpath))


def walk(root: bytes, start: bytes, ignore: IgnoreRules) -> Iterator[WalkItem]:
    """The same walk, one item at a time (for callers that want links or a few files)."""
    for listing in walk_listings(root, start, ignore):
        yield from listing.errors
        yield from listing.links
        for name, signature, ctime_ns in listing.take()[0]:
            yield WalkedFile(listing.prefix + name, signature, ctime_ns)


@dataclass
class ReconcileDiff:
    """What a walk found that the catalog does not already know. `vanished` holds relpaths."""

    changed: list[WalkedFile] = field(default_factory=list)
    vanished: list[bytes] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)
    links: list[WalkedLink] = field(default_factory=list)
    seen: int = 0
    changed_count: int = 0


class ReconcileComparer:
    """Compares walk listings against a catalog snapshot, a directory at a time (so the walk can
    stream changed files onward while it is still going), then lists the vanished rows at the end."""

    def __init__(self, known: CatalogSnapshot, keep_changed: bool = True) -> None:
        # The comparison pops from a copy: a sweep still needs the snapshot to name its findings.
        self._unseen = dict(known.signatures)
        self._unseen_errors = dict(known.in_error)
        # A reconcile streams changed files onward and only needs their count; keeping 100,000
        # stat results until the walk ends would cost tens of MB. A sweep keeps them to report.
        self.keep_changed = keep_changed
        self.diff = ReconcileDiff()

    def feed(self, listing: DirListing) -> list[WalkedFile]:
        """Returns the files that must go on to settle/hash: the reader pops each file from
        `unseen` and lists only those whose signature differs or that the catalog lacks."""
        self.diff.errors.extend(listing.errors)
        self.diff.links.extend(listing.links)
        files, unchanged = listing.take(self._unseen)
        self.diff.seen += len(files) + unchanged
        prefix = listing.prefix
        changed = [WalkedFile(prefix + name, signature, ctime_ns) for name, signature, ctime_ns in files]
        if changed:
            for item in changed:
                self._unseen_errors.pop(item.relpath, None)
            self.diff.changed_count += len(changed)
            if self.keep_changed:
                self.diff.changed.extend(changed)
        return changed

    def finish(self, ignore: IgnoreRules) -> ReconcileDiff:
        """Rows not seen are vanished, except below a directory the walk could not read and
        paths now ignored (an ignore rule added later hides files; it does not delete them)."""
        blocked = [e.relpath for e in self.diff.errors]
        for relpath in itertools.chain(self._unseen, self._unseen_errors):
            if any(relpath == b or relpath.startswith(b + b"/") or not b for b in blocked):
                continue
            if ignore.path_ignored(os.fsdecode(relpath)):
                continue
            self.diff.vanished.append(relpath)
        self._unseen, self._unseen_errors = {}, {}
        return self.diff
