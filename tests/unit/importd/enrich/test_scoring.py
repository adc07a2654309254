from __future__ import annotations

import pytest

from importd.enrich.provider import Candidate
from importd.enrich.scoring import (
    DEFAULT_MIN_CONFIDENCE,
    decide,
    normalise,
    ranked,
    score,
    title_similarity,
    year_penalty,
)


def movie(ident: int, title: str, year: int | None, original: str | None = None) -> Candidate:
    return Candidate(ident, "movie", title, original, year)


def test_normalise_folds_case_accents_punctuation_and_a_leading_article() -> None:
    assert normalise("Le Dîner de Cons!") == "diner de cons"
    assert normalise("The  Wire") == "wire"
    assert normalise("Fast & Furious") == "fast and furious"
    assert normalise("The") == "the"  # an article alone is the title
    assert normalise("Léon: The Professional") == "leon the professional"


def test_the_default_threshold_is_beets_strong_recommendation() -> None:
    assert pytest.approx(0.96) == DEFAULT_MIN_CONFIDENCE


def test_exact_title_and_year_is_certain_a_year_off_is_not() -> None:
    assert score("Amélie", 2001, movie(1, "Amelie", 2001)).confidence == 1.0
    off = score("Amélie", 2001, movie(1, "Amélie", 2000))
    assert off.confidence == pytest.approx(0.875)
    assert off.confidence < DEFAULT_MIN_CONFIDENCE
    assert score("Amélie", 2001, movie(1, "Amélie", 1990)).confidence == pytest.approx(0.75)


def test_the_original_title_counts_too() -> None:
    c = movie(194, "Amélie", 2001, "Le Fabuleux Destin d'Amélie Poulain")
    assert score("Le fabuleux destin d'Amélie Poulain", 2001, c).confidence == 1.0


def test_without_a_year_only_the_title_counts() -> None:
    assert year_penalty(None, 1999) is None
    assert year_penalty(1999, None) == 0.5
    assert score("Playtime", None, movie(10, "Playtime", 1967)).confidence == 1.0


def test_similar_titles_score_in_between() -> None:
    assert 0.5 < title_similarity("The Matrix Reloaded", "The Matrix") < 1.0
    assert title_similarity("", "x") == 0.0


def test_decide_applies_one_clear_winner() -> None:
    scored = ranked("Amélie", 2001, [movie(2, "Amélie", 1990), movie(1, "Amélie", 2001)])
    decision = decide(scored, DEFAULT_MIN_CONFIDENCE)
    assert decision.action == "apply" and decision.best is not None
    assert decision.best.candidate.provider_id == 1


def test_decide_leaves_equally_good_candidates_pending() -> None:
    scored = ranked("The Twins", 1990, [movie(301, "The Twins", 1990), movie(302, "The Twins", 1990)])
    decision = decide(scored, DEFAULT_MIN_CONFIDENCE)
    assert decision.action == "pending" and "2 candidates score alike" in decision.reason
    assert [s.candidate.provider_id for s in scored] == [301, 302]  # the provider's order kept


def test_decide_below_the_threshold_is_pending_and_nothing_is_none() -> None:
    assert decide(ranked("Amélie", 2001, [movie(1, "Amélie", 2000)]), 0.96).action == "pending"
    assert decide(ranked("Amélie", 2001, [movie(1, "Amélie", 2000)]), 0.8).action == "apply"
    assert decide([], 0.96).action == "none"
