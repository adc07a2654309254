"""Paths as the kernel gives them (bytes) and their spellings for people and for the wire.

Linux names are bytes: not necessarily UTF-8, possibly holding newlines, and NFC/NFD spellings of
one name are different files. The catalog keys on the raw bytes; `wire` is the lossless
surrogateescape text that crosses the control socket; `display` is for logs and terminals.
"""

from __future__ import annotations

import os

from importctl.protocol import display_path


def display(raw: bytes) -> str:
    """One printable line: undecodable bytes as \\xNN, control characters escaped."""
    return display_path(raw)


def wire(raw: bytes) -> str:
    return os.fsdecode(raw)


def from_wire(text: str) -> bytes:
    return os.fsencode(text)


def join(root: bytes, relpath: bytes) -> bytes:
    return root + b"/" + relpath if relpath else root


def subtree_bounds(prefix: bytes) -> tuple[bytes, bytes]:
    """[low, high) of the byte strings strictly below `prefix/` ('0' is the byte after '/')."""
    return prefix + b"/", prefix + b"0"
