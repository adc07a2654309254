"""Candidates scored against what the entity says of itself, and the decision to apply one.

The score follows beets' weighted distance: each component is a penalty from 0 (agrees) to 1
(disagrees), weighted (title 3, year 1; the year only when the entity knows its own), and the
distance is the weighted mean. Confidence is `1 - distance`. beets applies a match on its own
("strong recommendation") when the distance is at most 0.04: a confidence of at least 0.96 here,
the default `[enrich] min_confidence`. A title equal after normalisation with the right year
scores 1.0; the right title a year off scores 0.875 (pending); an id the entity already holds
(from an NFO file or a spreadsheet) is certain (1.0) and needs no search.

Two candidates within `TIE_MARGIN` of each other are never applied, however high they score:
several films share a title and a year (remakes, homonyms), and choosing among them is the
operator's (`importctl pending`, `importctl validate`).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from importd.enrich.provider import Candidate

TITLE_WEIGHT = 3.0
YEAR_WEIGHT = 1.0
STRONG_DISTANCE = 0.04  # beets' strong_rec_thresh
DEFAULT_MIN_CONFIDENCE = 1.0 - STRONG_DISTANCE
TIE_MARGIN = 0.02

_ARTICLES = frozenset({"the", "a", "an", "le", "la", "les", "l", "un", "une", "der", "die", "das", "el"})
_NOT_WORD = re.compile(r"[^\w]+")


def normalise(title: str) -> str:
    """Caseless, without accents, punctuation or a leading article; `&` is `and`."""
    decomposed = unicodedata.normalize("NFKD", title.casefold().replace("&", " and "))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    words = _NOT_WORD.sub(" ", plain.replace("_", " ")).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def title_similarity(a: str, b: str) -> float:
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    return difflib.SequenceMatcher(None, na, nb, autojunk=False).ratio()


def year_penalty(wanted: int | None, offered: int | None) -> float | None:
    """None: the entity knows no year (the component is left out)."""
    if wanted is None:
        return None
    if offered is None:
        return 0.5
    gap = abs(wanted - offered)
    return 0.0 if gap == 0 else 0.5 if gap == 1 else 1.0


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    confidence: float
    title: float  # similarity 0..1
    year: float | None  # penalty 0..1, None when not counted


def score(title: str, year: int | None, candidate: Candidate) -> Scored:
    similarity = max(
        title_similarity(title, candidate.title),
        title_similarity(title, candidate.original_title) if candidate.original_title else 0.0,
    )
    penalty = year_penalty(year, candidate.year)
    weight = TITLE_WEIGHT + (YEAR_WEIGHT if penalty is not None else 0.0)
    distance = (TITLE_WEIGHT * (1.0 - similarity) + YEAR_WEIGHT * (penalty or 0.0)) / weight
    return Scored(candidate, round(1.0 - distance, 4), round(similarity, 4), penalty)


def ranked(title: str, year: int | None, candidates: Sequence[Candidate]) -> list[Scored]:
    """Best first; equal confidences keep the provider's order (its own relevance)."""
    scored = [score(title, year, c) for c in candidates]
    return sorted(scored, key=lambda s: -s.confidence)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # apply | pending | none
    best: Scored | None
    reason: str


def decide(scored: Sequence[Scored], min_confidence: float) -> Decision:
    if not scored:
        return Decision("none", None, "the provider found no candidate")
    best = scored[0]
    if best.confidence < min_confidence:
        return Decision("pending", best, f"best confidence {best.confidence:.3f} < {min_confidence:.3f}")
    if len(scored) > 1 and best.confidence - scored[1].confidence < TIE_MARGIN:
        return Decision(
            "pending",
            best,
            f"{sum(1 for s in scored if best.confidence - s.confidence < TIE_MARGIN)} candidates "
            f"score alike ({best.confidence:.3f})",
        )
    return Decision("apply", best, f"confidence {best.confidence:.3f}")


__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "STRONG_DISTANCE",
    "TIE_MARGIN",
    "Decision",
    "Scored",
    "decide",
    "normalise",
    "ranked",
    "score",
    "title_similarity",
    "year_penalty",
]
