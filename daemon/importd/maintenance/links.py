"""Symlinks under the roots: where each one points, and how to mend a broken one.

Three steps, each usable alone: `LinkClassifier.classify` reads one link (never following it into
a loop: the kernel's ELOOP decides, and `realpath` keeps its own loop guard); `propose_repair` asks
the catalog, through the narrow `CandidateSource`, where the target went; `apply_repair` re-checks
the disk and swaps the link atomically. Nothing here decides for the operator: several candidates
are listed, never guessed, and a link with none is proposed for the trash (see `trash.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat as stat_mod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from importd.paths import display, join, wire
from importd.pipeline.reconcile import describe_os_error

LinkState = Literal["ok", "broken", "loop", "outside-roots"]
Action = Literal["repair", "trash", "skip"]

# Candidate reasons, strongest first.
MOVED = "moved (catalog move history)"
FOLDER_MOVED = "its folder moved (catalog move history)"
SAME_NAME_AND_CONTENT = "same name and content"
SAME_NAME_AND_SIZE = "same name and size"
SAME_NAME = "same name"
SAME_CONTENT = "same content (BLAKE3)"

# How many ancestors of a missing target are asked about a folder move, closest first.
MAX_FOLDER_DEPTH = 32
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One symlink and where it leads. `resolved` is None for a loop; for a broken link it is where
    the target would be (realpath of the missing path). `target_root`/`target_relpath` name the
    root holding `resolved`, when one does. `via_link` is set when a broken link's target is
    itself a symlink: mending that one mends this one too."""

    root_name: str
    relpath: bytes
    path: bytes
    target_as_written: bytes
    resolved: bytes | None
    state: LinkState
    target_root: str | None = None
    target_relpath: bytes | None = None
    target_exists: bool = False
    via_link: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root_name,
            "link": wire(self.path),
            "target": wire(self.target_as_written),
            "resolved": None if self.resolved is None else wire(self.resolved),
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class LinkError:
    """The link could not be read (gone since the walk, no longer a link, permission denied)."""

    root_name: str
    relpath: bytes
    path: bytes
    reason: str


class LinkClassifier:
    """Classifies links against a fixed set of roots; resolves each root's real path once."""

    def __init__(self, root_paths: Mapping[str, bytes]) -> None:
        self._roots = dict(root_paths)
        real = [(os.path.realpath(path), name) for name, path in root_paths.items()]
        # Longest first, so a root nested inside another claims its own files.
        self._real = sorted(real, key=lambda item: len(item[0]), reverse=True)

    def locate(self, resolved: bytes) -> tuple[str, bytes] | None:
        """(root name, relpath) of a resolved absolute path, or None when it is outside every root."""
        for real, name in self._real:
            if resolved == real:
                return name, b""
            base = real if real.endswith(b"/") else real + b"/"
            if resolved.startswith(base):
                return name, resolved[len(base) :]
        return None

    def classify(self, root_name: str, relpath: bytes) -> LinkInfo | LinkError:
        root = self._roots.get(root_name)
        if root is None:
            return LinkError(root_name, relpath, relpath, f"unknown root {root_name!r}")
        path = join(root, relpath)
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return LinkError(root_name, relpath, path, "gone")
        except OSError as exc:
            reason = "no longer a symlink" if exc.errno == errno.EINVAL else describe_os_error(exc)
            return LinkError(root_name, relpath, path, reason)
        try:
            os.stat(path)
            exists = True
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return LinkInfo(root_name, relpath, path, target, None, "loop")
            if exc.errno not in _NOT_THERE:
                return LinkError(root_name, relpath, path, f"cannot follow: {describe_os_error(exc)}")
            exists = False
        # realpath has its own loop guard; the stat above already ruled loops out.
        resolved = os.path.realpath(path)
        where = self.locate(resolved)
        if where is None:
            return LinkInfo(root_name, relpath, path, target, resolved, "outside-roots", target_exists=exists)
        if exists:
            return LinkInfo(root_name, relpath, path, target, resolved, "ok", where[0], where[1], True)
        via = _via_link(path, target)
        return LinkInfo(
            root_name, relpath, path, target, resolved, "broken", where[0], where[1], via_link=via
        )


def classify_link(root_paths: Mapping[str, bytes], root_name: str, relpath: bytes) -> LinkInfo | LinkError:
    """One-off classification; use one `LinkClassifier` for a whole walk."""
    return LinkClassifier(root_paths).classify(root_name, relpath)


def _via_link(path: bytes, target: bytes) -> bytes | None:
    first_hop = target if target.startswith(b"/") else os.path.dirname(path) + b"/" + target
    try:
        st = os.lstat(first_hop)
    except OSError:
        return None
    return os.path.normpath(first_hop) if stat_mod.S_ISLNK(st.st_mode) else None


@dataclass(frozen=True, slots=True)
class Move:
    """The catalog saw the file at `old_relpath` move; it now lives at `current` (absolute)."""

    old_relpath: bytes
    current: bytes
    at: float


@dataclass(frozen=True, slots=True)
class LastKnown:
    """What the catalog last knew of the file at a path that is now gone (a `missing` row)."""

    size: int
    blake3: str | None


class CandidateSource(Protocol):
    """The four questions a repair asks the catalog. All paths answered are absolute, of files
    that are `present`; the link code checks them on disk again before proposing them.

    - `moves_from(root, relpath)`: moves whose *old* path is `relpath` or lies below `relpath/`.
      Move detection updates a row's relpath in place, so the catalog needs a move history
      (row id, old root, old relpath, time) written whenever the writer applies a `MovedFile` or
      reuses a missing row for the same content at a new path. Answer with each row's current
      path. Asking about a folder returns the moves out of it, from which a renamed folder is
      inferred (so links to folders, and to files the catalog never held, mend too).
    - `last_known(root, relpath)`: size and BLAKE3 of the newest row ever at that path (a
      `missing` row after a deletion), or None.
    - `by_name_and_size(name, size)`: present files whose last path component is `name`, with that
      size when `size` is not None.
    - `by_hash(blake3)`: present files with that content.
    """

    def moves_from(self, root_name: str, relpath: bytes) -> Sequence[Move]: ...

    def last_known(self, root_name: str, relpath: bytes) -> LastKnown | None: ...

    def by_name_and_size(self, name: bytes, size: int | None) -> Sequence[bytes]: ...

    def by_hash(self, blake3: str) -> Sequence[bytes]: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    path: bytes
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": wire(self.path), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class LinkProposal:
    """`repair`: exactly one candidate; `skip`: none or several (listed for the operator to
    choose), or nothing to mend; `trash`: broken with no candidate at all (an orphan)."""

    link: LinkInfo
    old_target: bytes
    candidates: list[Candidate]
    action: Action
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "link": wire(self.link.path),
            "old_target": wire(self.old_target),
            "candidates": [c.to_json() for c in self.candidates],
            "action": self.action,
            "state": self.link.state,
            "note": self.note,
        }


def propose_repair(link: LinkInfo, catalog: CandidateSource, *, limit: int = 10) -> LinkProposal:
    """Moved file, else moved folder, else a unique file with the same name (and size when the
    catalog knew it), else the same content. `limit` caps how many ambiguous candidates are listed."""
    if link.state == "ok":
        return _proposal(link, "skip", note="the link works")
    if link.state == "outside-roots":
        note = "target outside every root: not repaired"
        return _proposal(link, "skip", note=note if link.target_exists else "broken, " + note)
    if link.state == "loop":
        return _proposal(link, "skip", note="link loop: fix by hand")
    if link.via_link is not None:
        return _proposal(
            link, "skip", note=f"points at another link ({display(link.via_link)}): mend that one"
        )
    if link.target_root is None or not link.target_relpath or link.resolved is None:
        return _proposal(link, "skip", note="target is not a path under a root")

    moved = _by_move(link.target_root, link.target_relpath, catalog)
    if len(moved) == 1:
        return _proposal(link, "repair", moved)
    if moved:
        return _ambiguous(link, moved, limit)

    known = catalog.last_known(link.target_root, link.target_relpath)
    name = os.path.basename(link.target_relpath)
    size = known.size if known is not None else None
    by_name = _existing(catalog.by_name_and_size(name, size), link.path) if name else []
    by_content = (
        _existing(catalog.by_hash(known.blake3), link.path) if known is not None and known.blake3 else []
    )
    named = SAME_NAME_AND_SIZE if size is not None else SAME_NAME
    if len(by_name) == 1:
        return _proposal(link, "repair", [Candidate(by_name[0], named)])
    if by_name:
        same_content = set(by_content)
        both = [p for p in by_name if p in same_content]
        if len(both) == 1:
            return _proposal(link, "repair", [Candidate(both[0], SAME_NAME_AND_CONTENT)])
        return _ambiguous(link, [Candidate(p, named) for p in by_name], limit)
    if len(by_content) == 1:
        return _proposal(link, "repair", [Candidate(by_content[0], SAME_CONTENT)])
    if by_content:
        return _ambiguous(link, [Candidate(p, SAME_CONTENT) for p in by_content], limit)
    root_dir = link.resolved[: -len(link.target_relpath) - 1] or b"/"
    if not _has_entries(root_dir):
        # An unmounted disk breaks every link into it: that is not a reason to trash them.
        return _proposal(link, "skip", note=f"root {link.target_root} is empty or unreadable (not mounted?)")
    return _proposal(link, "trash", note="no candidate: orphan")


def _proposal(
    link: LinkInfo, action: Action, candidates: Sequence[Candidate] = (), note: str = ""
) -> LinkProposal:
    return LinkProposal(link, link.target_as_written, list(candidates), action, note)


def _ambiguous(link: LinkInfo, candidates: Sequence[Candidate], limit: int) -> LinkProposal:
    note = f"{len(candidates)} candidates: choose one"
    if len(candidates) > limit:
        note += f" (first {limit} listed)"
    return _proposal(link, "skip", candidates[:limit], note)


def _existing(paths: Sequence[bytes], link_path: bytes) -> list[bytes]:
    out: list[bytes] = []
    for path in dict.fromkeys(paths):
        if path != link_path and _exists(path):
            out.append(path)
    return out


def _has_entries(folder: bytes) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def _exists(path: bytes) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _by_move(root: str, relpath: bytes, catalog: CandidateSource) -> list[Candidate]:
    """The file that left this exact path, else the folder (this path's or an ancestor's) that
    moved, inferred from the moves of the files that were inside it."""
    prefix = relpath
    rest = b""
    for _ in range(MAX_FOLDER_DEPTH):
        if not prefix:
            break
        moves = catalog.moves_from(root, prefix)
        if not rest:
            exact = [m for m in moves if m.old_relpath == prefix]
            if exact:
                latest = max(exact, key=lambda m: m.at)
                if _exists(latest.current):
                    return [Candidate(latest.current, MOVED)]
        folders: dict[bytes, None] = {}
        for move in moves:
            if not move.old_relpath.startswith(prefix + b"/"):
                continue
            inside = move.old_relpath[len(prefix) + 1 :]
            if move.current.endswith(b"/" + inside):
                folders[move.current[: -len(inside) - 1]] = None
        found: list[Candidate] = []
        for folder in folders:
            path = folder + b"/" + rest if rest else folder
            if _exists(path):
                found.append(Candidate(path, FOLDER_MOVED))
        if found:
            return found
        head, tail = os.path.split(prefix)
        rest = tail + b"/" + rest if rest else tail
        prefix = head
    return []


@dataclass(frozen=True, slots=True)
class RepairResult:
    link: LinkInfo
    old_target: bytes
    new_target: bytes
    candidate: Candidate


@dataclass(frozen=True, slots=True)
class RepairFailure:
    link: bytes
    reason: str

    @property
    def stale(self) -> bool:
        return self.reason.startswith("stale:")


def stale_reason(proposal: LinkProposal, chosen: Candidate | None = None) -> str | None:
    """Why the proposal no longer matches the disk ("stale: ..."), or None when it still does.
    Call it right before any change: a repair, or a move to the trash."""
    path = proposal.link.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "stale: the link is gone"
    except OSError as exc:
        return f"stale: cannot check the link: {describe_os_error(exc)}"
    if not stat_mod.S_ISLNK(st.st_mode):
        return "stale: no longer a symlink"
    try:
        target = os.readlink(path)
    except OSError as exc:
        return f"stale: cannot read the link: {describe_os_error(exc)}"
    if target != proposal.old_target:
        return f"stale: the link now points to {display(target)}"
    if proposal.link.state == "broken":
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "stale: the link is now a loop"
        else:
            return "stale: the link works again"
    if chosen is not None and not _exists(chosen.path):
        return f"stale: the candidate {display(chosen.path)} is gone"
    return None


def new_target_for(link_path: bytes, old_target: bytes, destination: bytes) -> bytes:
    """Absolute stays absolute. Relative is computed between real directories: `..` walks the
    physical tree, so a logical path through a symlinked root would land elsewhere."""
    if old_target.startswith(b"/"):
        return destination
    here = os.path.realpath(os.path.dirname(link_path))
    there = os.path.join(os.path.realpath(os.path.dirname(destination)), os.path.basename(destination))
    return os.path.relpath(there, here)


def apply_repair(
    proposal: LinkProposal, chosen: Candidate, *, recheck: bool = True
) -> RepairResult | RepairFailure:
    """Point the link at `chosen`: a new link beside it, checked to reach the candidate, then put in
    the old one's place by `swap_in`, so the link is never missing or half-written and nothing
    that appeared at its path meanwhile is overwritten."""
    link = proposal.link
    if link.state != "broken":
        return RepairFailure(link.path, f"only broken links are repaired (this one is {link.state})")
    if recheck:
        reason = stale_reason(proposal, chosen)
        if reason is not None:
            return RepairFailure(link.path, reason)
    try:
        want = os.stat(chosen.path)
        owner = os.lstat(link.path)
    except OSError as exc:
        return RepairFailure(link.path, f"stale: {describe_os_error(exc)}")
    new_target = new_target_for(link.path, proposal.old_target, chosen.path)
    folder = os.path.dirname(link.path)
    temp = folder + b"/.importd-repair-" + secrets.token_hex(8).encode()
    try:
        os.symlink(new_target, temp)
    except OSError as exc:
        return RepairFailure(link.path, f"cannot create the new link: {describe_os_error(exc)}")
    try:
        # Keep the owner when allowed; otherwise the new link is ours, which matters only in sticky folders.
        with contextlib.suppress(PermissionError):
            os.lchown(temp, owner.st_uid, owner.st_gid)
        got = os.stat(temp)
        if (got.st_dev, got.st_ino) != (want.st_dev, want.st_ino):
            os.unlink(temp)
            return RepairFailure(
                link.path, f"the new target {display(new_target)} does not reach the candidate"
            )
        problem = swap_in(temp, link.path, proposal.old_target)
    except OSError as exc:
        problem = f"cannot replace the link: {describe_os_error(exc)}"
    if problem is not None:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return RepairFailure(link.path, problem)
    fsync_dir(folder)
    return RepairResult(link, proposal.old_target, new_target, chosen)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: bytes, b: bytes) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two names atomically. False where the kernel, libc or
    filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _is_link_to(path: bytes, target: bytes) -> bool:
    try:
        return os.readlink(path) == target
    except OSError:
        return False


def swap_in(new: bytes, path: bytes, expected_target: bytes) -> str | None:
    """Put the link `new` in place of the link at `path`, which must still point at
    `expected_target`. The two are exchanged atomically and the old one is checked afterwards (and
    swapped back if something else had taken its place), so a file written at `path` meanwhile is
    never overwritten. Without RENAME_EXCHANGE: check, then rename. Returns a reason on failure."""
    if _exchange(new, path):
        if _is_link_to(new, expected_target):
            os.unlink(new)  # the old, broken link
            return None
        _exchange(new, path)
        return "stale: the link changed while it was being replaced"
    if not _is_link_to(path, expected_target):
        return "stale: the link changed while it was being replaced"
    os.rename(new, path)
    return None


def fsync_dir(path: bytes) -> None:
    """Make a rename durable; some filesystems refuse to fsync a directory, which is harmless."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
