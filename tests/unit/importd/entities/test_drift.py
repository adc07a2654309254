"""Drift lines from what a file says, what the entity holds, where that came from and when."""

from __future__ import annotations

from collections.abc import Sequence

from importd.entities.drift import file_drift, gone_drift
from importd.entities.metadata import JsonValue

PATH = "/srv/lib/Films/A (2001)/A.json"


SOURCES: dict[str, tuple[str, str, float]] = {
    "director": ("sidecar", "Films/A (2001)/A.json", 100.0),
    "year": ("folder_rule", "x", 100.0),
}


def drift(
    said: dict[str, JsonValue],
    *,
    sources: dict[str, tuple[str, str, float]] = SOURCES,
    conflicts: Sequence[tuple[int, str, JsonValue, str]] = (),
    mtime: float = 50.0,
) -> list[tuple[str, str, int | None, str]]:
    lines = file_drift(
        said,
        attributes={"director": "Jeunet", "year": 2001},
        sources=sources,
        conflicts=conflicts,
        mtime=mtime,
        path=PATH,
    )
    return [(line.kind, line.attribute, line.conflict, line.settle) for line in lines]


def test_equal_values_and_values_the_catalog_lacks_are_no_drift() -> None:
    assert drift({"Director": "Jeunet ", "year": "2001", "rating": 8}) == []


def test_an_older_file_with_an_open_conflict() -> None:
    conflicts = [(7, "year", 1999, "x"), (9, "year", 2002, "Films/A (2001)/A.json")]
    assert drift({"year": 2002}, conflicts=conflicts) == [
        ("older", "year", 9, f"importctl resolve 9 --keep, then rewrite {PATH}")
    ]


def test_a_newer_file() -> None:
    conflicts = [(3, "director", "J.-P. Jeunet", "x")]
    assert drift({"director": "J.-P. Jeunet"}, mtime=200.0, conflicts=conflicts) == [
        ("newer", "director", 3, "importctl resolve 3 --take-new")
    ]
    ((kind, _, conflict, settle),) = drift({"director": "J.-P. Jeunet"}, mtime=200.0)
    assert (kind, conflict) == ("newer", None) and settle.startswith("the catalog kept its value")


def test_no_source_row_is_differs() -> None:
    assert drift({"year": 1999}, sources={}) == [("differs", "year", None, f"rewrite {PATH} to say 2001")]


def test_gone_lists_the_values_taken_from_that_file_only() -> None:
    sources = {
        "plot": ("nfo", "Films/A/movie.nfo", 1.0),
        "title": ("nfo", "Films/A/movie.nfo", 1.0),
        "year": ("folder_rule", "Films/A/movie.nfo", 1.0),
        "tmdb_id": ("nfo", "Films/A/other.nfo", 1.0),
    }
    lines = gone_drift(
        {"plot": "p", "title": "t", "year": 1, "tmdb_id": 2}, sources, "Films/A/movie.nfo", "/x"
    )
    assert [(line.kind, line.attribute, line.held, line.said) for line in lines] == [
        ("gone", "plot", "p", None),
        ("gone", "title", "t", None),
    ]
    assert "importctl forget /x" in lines[0].settle
