"""Reconcile: walk a root (or a subtree) and compare it with what the catalog knows.

The watcher is a hint; this walk is the truth. It runs at start-up, on `importctl scan`, after a
watcher failure and on a safety interval. It uses `os.scandir` with lstat only: symlinks are
never followed, so a link loop cannot trap it, and a bind-mount loop is caught by remembering the
(dev, inode) of every directory entered. Only what differs from the catalog by (size, mtime_ns,
inode, dev) goes on; files in error are always retried.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from importd.config import IgnoreRules
from importd.pipeline.items import FileStat, s64, u64

# (size, mtime_ns, inode, dev) as the catalog stores them: inode and dev as signed 64-bit.
Signature = tuple[int, int, int, int]
# A catalog row as the snapshot reads it: (relpath, *signature). Kept whole: building a dict of
# 100,000 rows is then a loop in C, not one tuple per row in Python.
KnownRow = tuple[bytes, int, int, int, int]


@dataclass(frozen=True, slots=True)
class WalkedFile:
    relpath: bytes
    signature: Signature
    ctime_ns: int

    @property
    def stat(self) -> FileStat:
        size, mtime_ns, inode, dev = self.signature
        return FileStat(size, mtime_ns, self.ctime_ns, u64(inode), u64(dev))

    @classmethod
    def of(cls, relpath: bytes, st: os.stat_result) -> WalkedFile:
        return cls(relpath, (st.st_size, st.st_mtime_ns, s64(st.st_ino), s64(st.st_dev)), st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class WalkedLink:
    relpath: bytes


@dataclass(frozen=True, slots=True)
class WalkError:
    """A directory or entry the walk could not read; nothing under it may be called missing."""

    relpath: bytes
    reason: str


WalkItem = WalkedFile | WalkedLink | WalkError


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


@dataclass(frozen=True, slots=True)
class DirListing:
    """One directory as the walk read it: the files that pass the ignore rules as
    (name, signature, ctime_ns), relpath = prefix + name; links and errors with whole relpaths."""

    prefix: bytes
    files: list[tuple[bytes, Signature, int]]
    links: list[WalkedLink] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)
    # Files the reader already found unchanged against the comparer's `unseen` (and left out).
    unchanged: int = 0


_ScanResult = tuple[
    list[tuple[bytes, Signature, int]],
    list[tuple[bytes, int, int]],
    list[bytes],
    list[tuple[bytes, int]],
    int,
]
_ScanDir = Callable[[bytes, bytes, "dict[bytes, KnownRow] | None"], _ScanResult]


def _scan_dir_python(
    path: bytes, prefix: bytes = b"", unseen: dict[bytes, KnownRow] | None = None
) -> _ScanResult:
    """What `_scandir.scan_dir` returns, with os.scandir: the fallback when the extension is not
    built, and the reference it is tested against."""
    files: list[tuple[bytes, Signature, int]] = []
    dirs: list[tuple[bytes, int, int]] = []
    links: list[bytes] = []
    errors: list[tuple[bytes, int]] = []
    unchanged = 0
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
            if unseen is not None:
                known = unseen.pop(prefix + entry.name, None)
                if known is not None and known[1:] == signature:
                    unchanged += 1
                    continue
            files.append((entry.name, signature, st.st_ctime_ns))
        elif stat_mod.S_ISDIR(st.st_mode):
            dirs.append((entry.name, st.st_dev, st.st_ino))
        elif stat_mod.S_ISLNK(st.st_mode):
            links.append(entry.name)
    return files, dirs, links, errors, unchanged


def _native_scan_dir() -> _ScanDir | None:
    try:
        from importd.pipeline._scandir import scan_dir as native
    except ImportError:  # not compiled (a source checkout without a build): same results, slower
        return None
    return native


scan_dir: _ScanDir = _native_scan_dir() or _scan_dir_python


def walk_listings(
    root: bytes,
    start: bytes,
    ignore: IgnoreRules,
    scan: _ScanDir | None = None,
    unseen: Callable[[], dict[bytes, KnownRow] | None] | None = None,
) -> Iterator[DirListing]:
    """Depth-first walk below `root/start` (start may be b"" for the whole root), one listing
    per directory. `unseen`, asked before each directory, may give the comparer's dict of
    catalog signatures: the reader then compares (and pops) as it reads, and lists only what
    differs; the comparer still works when it gets every file instead."""
    scan = scan or scan_dir
    top = root + b"/" + start if start else root
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield DirListing(b"", [], errors=[WalkError(start, describe_os_error(exc))])
        return
    if stat_mod.S_ISREG(st.st_mode):
        if start and not ignore.path_ignored(os.fsdecode(start)):
            head, _, name = start.rpartition(b"/")
            walked = WalkedFile.of(start, st)
            yield DirListing(head + b"/" if head else b"", [(name, walked.signature, walked.ctime_ns)])
        return
    if stat_mod.S_ISLNK(st.st_mode):
        yield DirListing(b"", [], links=[WalkedLink(start)])
        return
    if not stat_mod.S_ISDIR(st.st_mode):
        return
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    check_paths = ignore.has_path_globs
    ignored = ignore.name_ignored_bytes
    stack: list[bytes] = [start]
    while stack:
        rel = stack.pop()
        path = root + b"/" + rel if rel else root
        prefix = rel + b"/" if rel else b""
        against = unseen() if unseen is not None else None
        try:
            files, dirs, links, errors, unchanged = scan(path, prefix, against)
        except OSError as exc:
            yield DirListing(prefix, [], errors=[WalkError(rel, describe_os_error(exc))])
            continue
        if ignored is not None:
            files = [f for f in files if not ignored(f[0])]
        if check_paths:
            files = [f for f in files if not ignore.path_ignored(os.fsdecode(prefix + f[0]))]
        listing = DirListing(prefix, files, unchanged=unchanged)
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
        yield listing


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
        for name, signature, ctime_ns in listing.files:
            yield WalkedFile(listing.prefix + name, signature, ctime_ns)


@dataclass
class CatalogSnapshot:
    """What the catalog knows of the live rows of a root (or subtree), shaped for the comparison:
    `signatures` holds the present rows only, so a row in error never compares equal and is
    retried; `in_error` the rows in error. Row ids are looked up only for what vanished."""

    signatures: dict[bytes, KnownRow]
    in_error: dict[bytes, int]

    def status(self, relpath: bytes) -> str | None:
        if relpath in self.signatures:
            return "present"
        if relpath in self.in_error:
            return "error"
        return None


@dataclass
class ReconcileDiff:
    """What a walk found that the catalog does not already know. `vanished` holds relpaths."""

    changed: list[WalkedFile] = field(default_factory=list)
    vanished: list[bytes] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)
    links: list[WalkedLink] = field(default_factory=list)
    seen: int = 0
    changed_count: int = 0


_NOT_KNOWN: KnownRow = (b"", -1, -1, -1, -1)


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

    @property
    def unseen(self) -> dict[bytes, KnownRow]:
        """Catalog signatures not met yet, for a reader that compares as it reads."""
        return self._unseen

    def feed(self, listing: DirListing) -> list[WalkedFile]:
        """Returns the files that must go on to settle/hash. A file the reader already popped
        from `unseen` is not found there again, so it counts as changed, as it should."""
        self.diff.errors.extend(listing.errors)
        self.diff.links.extend(listing.links)
        self.diff.seen += len(listing.files) + listing.unchanged
        prefix, pop = listing.prefix, self._unseen.pop
        changed = [
            WalkedFile(relpath, signature, ctime_ns)
            for name, signature, ctime_ns in listing.files
            if (pop(relpath := prefix + name, None) or _NOT_KNOWN)[1:] != signature
        ]
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
