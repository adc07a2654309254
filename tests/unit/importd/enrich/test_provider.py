"""TMDB's shapes parsed into candidates and attribute values; the query an entity makes."""

from __future__ import annotations

from importd.enrich.provider import (
    Candidate,
    Details,
    ProviderFailure,
    Secret,
    fingerprint,
    parse_details,
    parse_search,
    query_of,
)

SEARCH = {
    "page": 1,
    "results": [
        {"id": 194, "title": "Amélie", "original_title": "Le Fabuleux Destin d'Amélie Poulain",
         "release_date": "2001-04-25", "overview": "A waitress."},
        {"id": 7, "title": "Same", "original_title": "Same", "release_date": ""},
        {"id": "x", "title": "bad id"},
        {"title": "no id"},
        "not an object",
    ],
}  # fmt: skip


def test_search_results_become_candidates() -> None:
    found = parse_search("movie", SEARCH)
    assert found == [
        Candidate(194, "movie", "Amélie", "Le Fabuleux Destin d'Amélie Poulain", 2001, "A waitress."),
        Candidate(7, "movie", "Same", None, None, ""),
    ]
    assert Candidate.from_json(found[0].to_json()) == found[0]


def test_tv_search_uses_names_and_first_air_dates() -> None:
    body = {
        "results": [
            {"id": 1399, "name": "Kaamelott", "original_name": "Kaamelott", "first_air_date": "2005-01-03"}
        ]
    }
    assert parse_search("tv", body) == [Candidate(1399, "tv", "Kaamelott", None, 2005, "")]


def test_a_search_without_results_is_a_retryable_failure() -> None:
    for body in ({}, [], {"results": "x"}, None):
        failure = parse_search("movie", body)
        assert isinstance(failure, ProviderFailure) and failure.retryable


def test_details_become_the_attributes_a_match_brings() -> None:
    body = {
        "id": 194, "title": "Amélie", "original_title": "Le Fabuleux Destin d'Amélie Poulain",
        "release_date": "2001-04-25", "overview": "A waitress. ", "runtime": 122, "tagline": "",
        "imdb_id": "tt0211915", "genres": [{"id": 35, "name": "Comedy"}, {"id": 10749, "name": "Romance"}],
    }  # fmt: skip
    details = parse_details("movie", body)
    assert details == Details(
        194,
        "movie",
        {
            "tmdb_id": 194,
            "title": "Amélie",
            "original_title": "Le Fabuleux Destin d'Amélie Poulain",
            "year": 2001,
            "premiered": "2001-04-25",
            "plot": "A waitress.",
            "runtime": 122,
            "imdb_id": "tt0211915",
            "genres": ["Comedy", "Romance"],
        },
    )
    assert isinstance(parse_details("movie", {"title": "no id"}), ProviderFailure)


def test_the_query_comes_from_the_entity() -> None:
    q = query_of("movie", "Le Dîner de cons (1998)", {"year": 1998}, "tmdb_id")
    assert (q.title, q.year, q.provider_id) == ("Le Dîner de cons", 1998, None)
    q = query_of("movie", "Amélie (2001)", {"title": "Amélie", "tmdb_id": "194"}, "tmdb_id")
    assert (q.title, q.year, q.provider_id) == ("Amélie", 2001, 194)
    assert query_of("tv", "Kaamelott", {}, "tmdb_id").year is None
    assert query_of("movie", "X", {"tmdb_id": True}, "tmdb_id").provider_id is None


def test_the_fingerprint_follows_the_query_only() -> None:
    a = query_of("movie", "Amélie (2001)", {"rating": 5}, "tmdb_id")
    b = query_of("movie", "Amélie (2001)", {"rating": 4}, "tmdb_id")
    c = query_of("movie", "Amélie (2001)", {"title": "Amelie"}, "tmdb_id")
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_a_secret_never_prints() -> None:
    key = Secret("abc123")
    assert "abc123" not in repr(key) and "abc123" not in str(key) and "abc123" not in f"{key}"
    assert key.reveal() == "abc123"


def test_an_id_or_a_year_of_digits_int_refuses_is_no_id_and_no_crash() -> None:
    q = query_of("movie", "Amélie (2001)", {"title": "Amélie", "tmdb_id": "²"}, "tmdb_id")
    assert q.provider_id is None and q.year == 2001
