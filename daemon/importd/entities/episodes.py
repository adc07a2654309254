"""Season and episode numbers from the way episode files are usually named.

Recognised, case-insensitively, first match wins: `S01E02` (also `S1E2`, `s01.e02`, `S01 E02`),
`1x02`, and a bare `E02` / `Ep 2` / `Episode 2` / `Épisode 2` (episode only). For a
multi-episode file (`S01E01E02`) the first number is taken. Resolutions such as `1920x1080` are
not mistaken for `1x02`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

__all__ = ["EpisodeNumber", "parse_episode"]

_SEASON_EPISODE = re.compile(r"(?<![a-z0-9])s(\d{1,3})[ ._-]?e(\d{1,4})(?![0-9])", re.IGNORECASE)
_CROSS = re.compile(r"(?<![a-z0-9])(\d{1,2})x(\d{2,3})(?![0-9])", re.IGNORECASE)
_EPISODE_ONLY = re.compile(r"(?<![a-z0-9])(?:e|ep|episode|épisode)[ ._-]?(\d{1,4})(?![0-9])", re.IGNORECASE)


class EpisodeNumber(NamedTuple):
    season: int | None
    episode: int | None


def parse_episode(filename: str) -> EpisodeNumber:
    filename = unicodedata.normalize("NFC", filename)
    for pattern in (_SEASON_EPISODE, _CROSS):
        m = pattern.search(filename)
        if m:
            return EpisodeNumber(int(m.group(1)), int(m.group(2)))
    m = _EPISODE_ONLY.search(filename)
    if m:
        return EpisodeNumber(None, int(m.group(1)))
    return EpisodeNumber(None, None)
