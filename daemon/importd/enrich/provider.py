"""What a metadata provider is to importd: the shapes it answers in, parsed into values, and the
query an entity makes. Pure: the HTTP side is `importd.enrich.tmdb`.

TMDB's shapes are the reference (`/search/movie`, `/search/tv`, `/movie/{id}`, `/tv/{id}`);
anything that does not have them is a `ProviderFailure` with the reason, never an exception.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["movie", "tv"]
KINDS: tuple[Kind, ...] = ("movie", "tv")
MAX_CANDIDATES = 10  # a search's first results kept (TMDB orders them by its own relevance)


class Secret:
    """A credential that prints as *** wherever it is shown by accident."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    reason: str
    retryable: bool = False
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    provider_id: int
    kind: Kind
    title: str
    original_title: str | None
    year: int | None
    overview: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "kind": self.kind,
            "title": self.title,
            "original_title": self.original_title,
            "year": self.year,
            "overview": self.overview[:300],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        kind: Kind = "tv" if data.get("kind") == "tv" else "movie"
        return cls(
            int(data["provider_id"]),
            kind,
            str(data.get("title") or ""),
            data.get("original_title"),
            data.get("year"),
            str(data.get("overview") or ""),
        )


@dataclass(frozen=True, slots=True)
class Details:
    """A film's or a series' record, as the entity attributes it brings."""

    provider_id: int
    kind: Kind
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Query:
    """What an entity asks: by the provider id it holds (certain), else by title and year."""

    kind: Kind
    title: str
    year: int | None
    provider_id: int | None


@dataclass
class Trace:
    """What asking for one entity took: requests sent, answers from the cache, and a line per
    try that failed (for the run's log)."""

    requests: int = 0
    cached: int = 0
    notes: list[str] = field(default_factory=list)


class Provider(Protocol):
    name: str

    async def search(
        self, kind: Kind, title: str, year: int | None, trace: Trace
    ) -> list[Candidate] | ProviderFailure: ...

    async def details(self, kind: Kind, provider_id: int, trace: Trace) -> Details | ProviderFailure: ...


_YEAR_SUFFIX = re.compile(r"\s*[\(\[](\d{4})[\)\]]\s*$")


def query_of(kind: Kind, name: str, attributes: Mapping[str, Any], id_attribute: str) -> Query:
    """The entity's own title (its `title` attribute, else its name without a trailing
    "(1998)"), its year (the `year` attribute, else the name's) and the provider id it holds."""
    found = _YEAR_SUFFIX.search(name)
    bare = name[: found.start()] if found else name
    title = attributes.get("title")
    year = attributes.get("year")
    if not isinstance(year, int) or isinstance(year, bool):
        year = int(found.group(1)) if found else None
    ident = attributes.get(id_attribute)
    provider_id = ident if isinstance(ident, int) and not isinstance(ident, bool) and ident > 0 else None
    if isinstance(ident, str) and ident.isascii() and ident.isdigit() and len(ident) < 16:
        provider_id = int(ident)
    return Query(
        kind, title.strip() if isinstance(title, str) and title.strip() else bare.strip(), year, provider_id
    )


def fingerprint(query: Query) -> str:
    """What the entity asked with: an entity whose query is unchanged is not asked again."""
    text = json.dumps([query.kind, query.title, query.year, query.provider_id], ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _year(date: Any) -> int | None:
    if isinstance(date, str) and len(date) >= 4 and date[:4].isascii() and date[:4].isdigit():
        return int(date[:4])
    return None


def parse_search(kind: Kind, body: Any) -> list[Candidate] | ProviderFailure:
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return ProviderFailure("the search's answer has no results list", retryable=True)
    out: list[Candidate] = []
    title_key, original_key, date_key = (
        ("title", "original_title", "release_date")
        if kind == "movie"
        else ("name", "original_name", "first_air_date")
    )
    for item in body["results"][:MAX_CANDIDATES]:
        if not isinstance(item, dict):
            continue
        ident = item.get("id")
        title = item.get(title_key)
        if not isinstance(ident, int) or isinstance(ident, bool) or not isinstance(title, str):
            continue
        original = item.get(original_key)
        overview = item.get("overview")
        out.append(
            Candidate(
                ident,
                kind,
                title,
                original if isinstance(original, str) and original != title else None,
                _year(item.get(date_key)),
                overview if isinstance(overview, str) else "",
            )
        )
    return out


def parse_details(kind: Kind, body: Any) -> Details | ProviderFailure:
    """The attributes a match brings: title, original_title, year, premiered, plot, tagline,
    runtime (minutes), genres, and the ids (`tmdb_id`, `imdb_id`)."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        return ProviderFailure("the details' answer has no id", retryable=True)
    title_key, original_key, date_key = (
        ("title", "original_title", "release_date")
        if kind == "movie"
        else ("name", "original_name", "first_air_date")
    )
    values: dict[str, Any] = {"tmdb_id": body["id"]}

    def text(key: str, attribute: str) -> None:
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            values[attribute] = value.strip()

    text(title_key, "title")
    text(original_key, "original_title")
    year = _year(body.get(date_key))
    if year is not None:
        values["year"] = year
    text(date_key, "premiered")
    text("overview", "plot")
    text("tagline", "tagline")
    text("imdb_id", "imdb_id")
    runtime = body.get("runtime")
    if isinstance(runtime, int) and not isinstance(runtime, bool) and runtime > 0:
        values["runtime"] = runtime
    genres = body.get("genres")
    if isinstance(genres, list):
        names = [g["name"] for g in genres if isinstance(g, dict) and isinstance(g.get("name"), str)]
        if names:
            values["genres"] = names
    if values.get("original_title") == values.get("title"):
        values.pop("original_title", None)
    return Details(body["id"], kind, values)


__all__ = [
    "KINDS",
    "Candidate",
    "Details",
    "Kind",
    "Provider",
    "ProviderFailure",
    "Query",
    "Secret",
    "Trace",
    "fingerprint",
    "parse_details",
    "parse_search",
    "query_of",
]
