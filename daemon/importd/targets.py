"""What an operator's ROOT or PATH names: which configured root, and which folder or file in it.

Every command that takes one (`scan`, `check`, `repair-links`, `find`, `info`) resolves it here,
so they accept the same spellings and refuse with the same words. A failure is a value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from importd.paths import display


@dataclass(frozen=True, slots=True)
class RootPlace:
    """A configured root as targets see it."""

    root_id: int
    name: str
    path: bytes  # absolute, as configured


@dataclass(frozen=True, slots=True)
class Place:
    """A whole root (`relpath` b"") or a folder or file under it."""

    root_id: int
    relpath: bytes
    path: bytes  # the absolute path as asked (normalised), for messages


@dataclass(frozen=True, slots=True)
class TargetError:
    code: Literal["not_found", "invalid"]
    message: str


def locate(path: bytes, roots: Sequence[RootPlace]) -> Place | None:
    """The root holding an absolute path, by the configured paths; failing that, by the path's
    realpath (a path through a symlink into a root)."""
    for candidate in (path, os.path.realpath(path)):
        for root in roots:
            if candidate == root.path:
                return Place(root.root_id, b"", path)
            if candidate.startswith(root.path + b"/"):
                return Place(root.root_id, candidate[len(root.path) + 1 :].rstrip(b"/"), path)
    return None


def resolve_path(text: str, roots: Sequence[RootPlace], cwd: str | None) -> Place | TargetError:
    """A path as the operator typed it: absolute, or relative to the client's working directory."""
    raw = os.fsencode(text)
    if not os.path.isabs(raw):
        if not cwd:
            return TargetError("invalid", f"{text!r} is relative and no working directory was sent")
        raw = os.path.join(os.fsencode(cwd), raw)
    raw = os.path.normpath(raw)
    return locate(raw, roots) or _outside(raw)


def resolve_target(target: str | None, roots: Sequence[RootPlace]) -> list[Place] | TargetError:
    """Every root (no target), one root by name, or a folder or file by absolute path. The client
    makes an existing relative path absolute before it asks."""
    if not target:
        return [Place(root.root_id, b"", root.path) for root in roots]
    for root in roots:
        if root.name == target:
            return [Place(root.root_id, b"", root.path)]
    if not os.path.isabs(target):
        names = ", ".join(sorted(root.name for root in roots)) or "none"
        return TargetError(
            "not_found", f"no root named {target!r} (roots: {names}); give a root name or an absolute path"
        )
    raw = os.path.normpath(os.fsencode(target))
    found = locate(raw, roots)
    return [found] if found is not None else _outside(raw)


def _outside(raw: bytes) -> TargetError:
    return TargetError("not_found", f"{display(raw)} is not under any configured root")


__all__ = ["Place", "RootPlace", "TargetError", "locate", "resolve_path", "resolve_target"]
