"""Reconcile: walk a root (or a subtree) and compare it with what the catalog knows.

The watcher is a hint; this walk is the truth. It runs at start-up, on `importctl scan`, after a
watcher failure and on a safety interval. It reads directories with lstat only (the C reader
`_dirreader`, or `os.scandir` where it is not built): symlinks are never followed, so a link loop
cannot trap it, and a bind-mount loop is caught by remembering the (dev, inode) of every directory
entered. Only what differs from the catalog by (size, mtime_ns, inode, dev) goes on; files in error
are always retried.
"""

from __future__ import annotations

import bisect
import errno
import heapq
import os
import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol, cast

from importd.config import IgnoreRules
from importd.items import FileStat, KnownRow, KnownRows, record, s64

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
    """One directory as the walk read it. Its files stay with the reader until `take` (no object
    per file for the unchanged ones). Links and errors carry whole relpaths."""

    prefix: bytes
    pending: DirFiles | None
    ignore: IgnoreRules
    links: list[WalkedLink] = field(default_factory=list)
    errors: list[WalkError] = field(default_factory=list)
    # Where the walk goes next (the next folder's prefix, None when this is its last listing).
    # The walk lists folders in byte order of their prefixes, so every path below `upto` lies
    # in a folder already listed: what the catalog holds there and the walk did not see is gone.
    upto: bytes | None = None

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
    # Folders read ahead of their turn: the next ones on the stack, up to READ_BATCH per call.
    ahead: dict[bytes, DirRead | OSError] = {}
    while stack:
        rel = stack.pop()
        read = ahead.pop(rel, None)
        if read is None:
            batch = [rel] + [r for r in reversed(stack[-(READ_BATCH - 1) :]) if r not in ahead]
            reads = reader([root + b"/" + r if r else root for r in batch])
            read = reads[0]
            ahead.update(zip(batch[1:], reads[1:], strict=True))
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
        error = WalkError(rel, describe_os_error(read))
        return DirListing(prefix, None, ignore, errors=[error], upto=_next(stack))
    files, dirs, links, errors = read
    walk_errors: list[WalkError] = []
    for name, errno_value in errors:
        if not _skipped(ignore, prefix + name):
            walk_errors.append(WalkError(prefix + name, describe_os_error(OSError(errno_value, ""))))
    walked_links = [WalkedLink(prefix + name) for name in links if not _skipped(ignore, prefix + name)]
    # Pushed so that they pop in byte order of `name/`: a folder's prefix then sorts after every
    # path of the folders listed before it (`a-b/` < `a/`: '-' is below '/').
    for name, dev, ino in sorted(dirs, key=_as_prefix, reverse=True):
        relpath = prefix + name
        if _skipped(ignore, relpath):
            continue
        if (dev, ino) in visited:
            walk_errors.append(WalkError(relpath, "directory loop (a bind mount of a parent?): not entered"))
            continue
        visited.add((dev, ino))
        stack.append(relpath)
    return DirListing(prefix, files, ignore, walked_links, walk_errors, _next(stack))


def _next(stack: list[bytes]) -> bytes | None:
    return stack[-1] + b"/" if stack else None


def _as_prefix(entry: tuple[bytes, int, int]) -> bytes:
    return entry[0] + b"/"


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
    # With `keep_changed`: what the catalog held for each changed file ("present": changed since;
    # "error"); a file it did not know is not here.
    catalog_status: dict[bytes, str] = field(default_factory=dict)


# Rows a comparison window may hold beyond the folder being compared before the rest are settled
# on the spot (a deleted folder of 500,000 files between two listings).
WINDOW_LIMIT = 32_768


class StreamComparer:
    """Compares walk listings with the catalog's rows read in relpath order while the walk runs:
    the merge of a sorted walk with a sorted catalog read, so neither side is ever held whole.

    The walk lists folders in byte order of their prefixes and each listing says where it goes
    next (`upto`). Every catalog row below `upto` lies in a folder already listed, so once a
    listing is compared the rows below `upto` that nothing matched are gone. A folder's own files
    that sort after its first subfolder (`a/z.txt` after `a/m/`) wait, with their signature,
    until the catalog read passes them."""

    def __init__(self, known: KnownRows, ignore: IgnoreRules, keep_changed: bool = False) -> None:
        self._known = known
        self._ignore = ignore
        # A reconcile streams changed files onward and needs only their count; a sweep keeps them
        # (with what the catalog held for each) to report them.
        self._keep_changed = keep_changed
        self._chunk: list[KnownRow] = []
        self._at = 0
        self._read_all = False
        self._in_error: list[bytes] | None = None
        self._error_at = 0
        self._waiting: dict[bytes, tuple[Signature, int]] = {}
        self._waiting_order: list[bytes] = []  # a heap of `_waiting`'s keys
        self._blocked: list[bytes] = []
        self.diff = ReconcileDiff()

    def feed(self, listing: DirListing) -> list[WalkedFile]:
        """The files that must go on to settle/hash: new, changed, in error, or (from earlier
        listings) waiting files the catalog read has now passed."""
        self.diff.errors.extend(listing.errors)
        self._blocked.extend(err.relpath for err in listing.errors)
        self.diff.links.extend(listing.links)
        upto, prefix = listing.upto, listing.prefix
        changed: list[WalkedFile] = []
        window = self._rows_below(upto, prefix, changed)
        had_rows = set(window) if self._keep_changed else None
        files, unchanged = listing.take(window)
        self.diff.seen += len(files) + unchanged
        for name, signature, ctime_ns in files:
            relpath = prefix + name
            if upto is not None and relpath >= upto:
                self._waiting[relpath] = (signature, ctime_ns)
                heapq.heappush(self._waiting_order, relpath)
            else:
                changed.append(WalkedFile(relpath, signature, ctime_ns))
                if had_rows is not None and relpath in had_rows:
                    self.diff.catalog_status[relpath] = "present"
        self._settle_below(upto, window, changed)
        return self._count(changed)

    def finish(self) -> list[WalkedFile]:
        """After the walk's last listing: the rest of the catalog read, a window at a time. Returns
        the last files to hand on; `diff` is then complete."""
        changed: list[WalkedFile] = []
        while not self._read_all or self._at < len(self._chunk):
            window = self._rows_below(None, None, changed)
            self._settle_below(None, window, changed)
        self._settle_below(None, {}, changed)
        return self._count(changed)

    def _count(self, changed: list[WalkedFile]) -> list[WalkedFile]:
        self.diff.changed_count += len(changed)
        if self._keep_changed:
            self.diff.changed += changed
        return changed

    def _rows_below(
        self, upto: bytes | None, prefix: bytes | None, changed: list[WalkedFile]
    ) -> dict[bytes, KnownRow]:
        """The catalog rows below `upto` (all of them when None; with no prefix, at most about a
        window's worth: `finish` comes back for the rest), keyed by relpath. Past WINDOW_LIMIT,
        rows outside the folder at `prefix` are settled on the spot."""
        window: dict[bytes, KnownRow] = {}
        while True:
            if self._at >= len(self._chunk):
                if self._read_all:
                    break
                chunk = self._known.next_chunk()
                if chunk is None:
                    self._read_all = True
                    break
                self._chunk, self._at = chunk, 0
            chunk, at = self._chunk, self._at
            end = len(chunk) if upto is None else bisect.bisect_left(chunk, upto, at, key=itemgetter(0))
            part = chunk[at:end] if at or end < len(chunk) else chunk
            window.update(zip(map(itemgetter(0), part), part, strict=True))
            self._at = end
            if len(window) > WINDOW_LIMIT:
                if prefix is None:
                    break
                window = self._spill(window, prefix, changed)
            if end < len(chunk):
                break
        return window

    def _spill(
        self, window: dict[bytes, KnownRow], prefix: bytes, changed: list[WalkedFile]
    ) -> dict[bytes, KnownRow]:
        """Keeps the rows of the folder at `prefix` (its listing still has to take them); every
        other row is a waiting file's or gone."""
        kept: dict[bytes, KnownRow] = {}
        start = len(prefix)
        for relpath, row in window.items():
            if relpath.startswith(prefix) and relpath.find(b"/", start) < 0:
                kept[relpath] = row
            elif (waiting := self._waiting.pop(relpath, None)) is not None:
                if row[1:] != waiting[0]:
                    self._changed_row(relpath)
                    changed.append(WalkedFile(relpath, *waiting))
            else:
                self._gone(relpath)
        return kept

    def _settle_below(
        self, upto: bytes | None, window: dict[bytes, KnownRow], changed: list[WalkedFile]
    ) -> None:
        """Everything below `upto` is now decided: waiting files against what is left of the
        window, rows in error, and rows nothing matched (gone). With `upto` None only the rows
        already read, unless the read is done."""
        high = upto
        if upto is None and not (self._read_all and self._at >= len(self._chunk)):
            # Only as far as the catalog has been read: `finish` loops for the rest.
            high = self._chunk[self._at][0] if self._at < len(self._chunk) else None
        order, waiting = self._waiting_order, self._waiting
        while order and (high is None or order[0] < high):
            relpath = heapq.heappop(order)
            entry = waiting.pop(relpath, None)
            if entry is None:
                continue  # settled by a spill
            known = window.pop(relpath, None)
            if known is None or known[1:] != entry[0]:
                if known is not None:
                    self._changed_row(relpath)
                changed.append(WalkedFile(relpath, *entry))
        errors = self._errors_below(high)
        if errors:
            looked_at = {item.relpath for item in changed}
            for relpath in errors:
                if relpath not in looked_at:
                    self._gone(relpath)
                elif self._keep_changed:
                    self.diff.catalog_status[relpath] = "error"
        for relpath in window:
            self._gone(relpath)

    def _changed_row(self, relpath: bytes) -> None:
        if self._keep_changed:
            self.diff.catalog_status[relpath] = "present"

    def _errors_below(self, high: bytes | None) -> list[bytes]:
        """Rows in error below `high` not yet looked at. A file in error never compares equal,
        so a walk that saw it hands it on (and retries it); only the unseen are gone."""
        if self._in_error is None:
            self._in_error = self._known.in_error()
        rows, at = self._in_error, self._error_at
        end = len(rows) if high is None else bisect.bisect_left(rows, high, at)
        self._error_at = end
        return rows[at:end]

    def _gone(self, relpath: bytes) -> None:
        """A row the walk did not see: vanished, unless below a folder it could not read or now
        ignored (an ignore rule added later hides files; it does not delete them)."""
        for blocked in self._blocked:
            if not blocked or relpath == blocked or relpath.startswith(blocked + b"/"):
                return
        if self._ignore.path_ignored(os.fsdecode(relpath)):
            return
        self.diff.vanished.append(relpath)
