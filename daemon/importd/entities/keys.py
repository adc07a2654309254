"""Entity match keys: the spelling-blind identity under which an entity is found again.

`Élodie`, `élodie` and `E\u0301lodie` (the same name decomposed, as macOS writes it) are three
different folder names on Linux but one character: the key is the Unicode canonical caseless
form (NFD, casefold, NFC), with surrounding whitespace stripped and inner runs of whitespace
collapsed to one space. The entity keeps its display spelling elsewhere.

A key always starts with its mode, so entities found by name, by path or by id never merge by
accident: `name:élodie`, `path:personnages/élodie`, `id:c-0042`. Path keys are relative to
the root, so the catalog must hold them together with the root. Undecodable bytes (surrogate
escapes) become `\\xNN` text so a key is always valid UTF-8 for the database.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Final

__all__ = ["MATCH_KEY_MODES", "fold", "id_key", "name_key", "path_key"]

MATCH_KEY_MODES: Final = ("name", "path", "id")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """Canonical caseless form of `text` (also what scene names and attribute names compare by).
    Cached: the same scene, attribute and entity names come back on every event."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())
    folded = _SPACES.sub(" ", folded).strip()
    try:
        return folded.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        # A surrogate that is no escaped byte cannot come from a file name; keep it visible.
        return folded.encode("utf-8", "backslashreplace").decode("utf-8")


def name_key(name: str) -> str:
    return "name:" + fold(name)


def path_key(scope: str) -> str:
    return "path:" + "/".join(fold(part) for part in scope.split("/"))


def id_key(value: object) -> str | None:
    """The key for an id read from metadata; None when there is no usable id."""
    if value is None or isinstance(value, bool | list | dict):
        return None
    text = fold(str(value))
    return "id:" + text if text else None
