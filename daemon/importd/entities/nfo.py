"""Kodi/Jellyfin `.nfo` files: what a film, a series or an episode says about itself.

`read_nfo` takes the file's bytes (the caller does the I/O) and returns an `Nfo` or a
`MetadataFailure` with the reason; nothing raises. The XML is parsed by defusedxml: a file that
declares entities (the "billion laughs" expansion, an external entity reading a local file or a
URL) is refused, never expanded, and so is anything larger than `MAX_NFO_BYTES`.

What is read, by root element:
- `<movie>` (`movie.nfo`, `<film name>.nfo`) and `<tvshow>` (`tvshow.nfo`): `title`,
  `originaltitle` (as `original_title`), `year`, `plot`, `tagline`, `runtime` (minutes),
  `premiered`, `genre`s (as the list `genres`), `studio`s (as `studios`), the ids (below) as
  attributes of the entity; `<tag>`s as its tags.
- `<episodedetails>` (`<episode>.nfo`): the episode's `title`, `plot`, `aired` and ids, as one
  attribute of the series named by its number, `s01e02` (from `<season>`/`<episode>`, else from
  the file name); its `<tag>`s go on the episode's own video file.
- `<season>` (`season.nfo`): nothing to read (not a failure).
Ids: `<uniqueid type="tmdb">` (any type: `tmdb_id`, `imdb_id`, `tvdb_id`, ...), then
`<tmdbid>`, `<imdbid>`, `<tvdbid>`, then `<id>` when it is an IMDb id (`tt0211915`) or, in a
`<tvshow>`, a number (Kodi's TVDB id). A file that is only a link (Kodi accepts a TMDB or IMDb
URL as the whole NFO) gives the ids in it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeXml

from importd.entities.episodes import parse_episode
from importd.entities.metadata import JsonValue, MetadataFailure

__all__ = ["MAX_NFO_BYTES", "Nfo", "NfoKind", "episode_attribute", "read_nfo"]

MAX_NFO_BYTES: Final = 1 << 20
NfoKind = Literal["movie", "tvshow", "episode", "season"]
_ROOTS: Final[dict[str, NfoKind]] = {
    "movie": "movie",
    "tvshow": "tvshow",
    "episodedetails": "episode",
    "season": "season",
}
_TEXT_FIELDS: Final = (
    ("title", "title"),
    ("originaltitle", "original_title"),
    ("plot", "plot"),
    ("tagline", "tagline"),
    ("premiered", "premiered"),
)
_EPISODE_FIELDS: Final = (("title", "title"), ("plot", "plot"), ("aired", "aired"))
_ID_TYPE = re.compile(r"[a-z0-9]{1,20}")
_IMDB = re.compile(r"tt\d{5,10}")
_URL_IDS: Final = (
    (re.compile(r"themoviedb\.org/(?:movie|tv)/(\d+)"), "tmdb_id"),
    (re.compile(r"imdb\.com/title/(tt\d{5,10})"), "imdb_id"),
    (re.compile(r"thetvdb\.com/.*?(?:id=|series/)(\d+)"), "tvdb_id"),
)


@dataclass(frozen=True)
class Nfo:
    """`attributes` for the entity (an episode's under its `s01e02` name); `tags` for the entity
    (films, series) or for the episode's video file (`kind == "episode"`)."""

    kind: NfoKind
    attributes: dict[str, JsonValue]
    tags: tuple[str, ...] = ()


def episode_attribute(season: int, episode: int) -> str:
    return f"s{season:02d}e{episode:02d}"


def read_nfo(data: bytes, file_name: str = "") -> Nfo | MetadataFailure:
    if len(data) > MAX_NFO_BYTES:
        return MetadataFailure(f"larger than {MAX_NFO_BYTES >> 20} MiB: not read as an NFO")
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        return _link_only(head)
    try:
        root: Element = SafeXml.fromstring(data)
    except defusedxml.EntitiesForbidden:
        return MetadataFailure("refused: the XML declares entities (entity expansion or an external entity)")
    except defusedxml.ExternalReferenceForbidden:
        return MetadataFailure("refused: the XML refers to an external resource")
    except defusedxml.DefusedXmlException as exc:
        return MetadataFailure(f"refused: {exc}")
    except ParseError as exc:
        return MetadataFailure(f"malformed XML: {exc}")
    except (ValueError, LookupError, RecursionError) as exc:  # e.g. an unknown encoding declared
        return MetadataFailure(f"malformed XML: {exc}")
    except Exception as exc:  # hostile input: whatever else the parser raises is this file's failure
        return MetadataFailure(f"unreadable XML: {type(exc).__name__}: {exc}")
    kind = _ROOTS.get(root.tag)
    if kind is None:
        return MetadataFailure(
            f"root element <{root.tag}> is not a Kodi NFO (movie, tvshow, episodedetails, season)"
        )
    if kind == "season":
        return Nfo("season", {})
    tags = tuple(dict.fromkeys(t for t in _texts(root, "tag")))
    if kind == "episode":
        return _episode(root, file_name, tags)
    attributes: dict[str, JsonValue] = {}
    for tag, name in _TEXT_FIELDS:
        value = _text(root, tag)
        if value:
            attributes[name] = value
    for tag, name in (("year", "year"), ("runtime", "runtime")):
        number = _number(_text(root, tag))
        if number is not None:
            attributes[name] = number
    for tag, name in (("genre", "genres"), ("studio", "studios")):
        values = list(dict.fromkeys(_texts(root, tag)))
        if values:
            attributes[name] = list(values)
    attributes.update(_ids(root, kind))
    return Nfo(kind, attributes, tags)


def _episode(root: Element, file_name: str, tags: tuple[str, ...]) -> Nfo | MetadataFailure:
    season, episode = _number(_text(root, "season")), _number(_text(root, "episode"))
    if season is None or episode is None:
        parsed = parse_episode(file_name)
        season = season if season is not None else parsed.season
        episode = episode if episode is not None else parsed.episode
    if season is None or episode is None:
        return MetadataFailure("an <episodedetails> with no <season>/<episode> and no S01E02 in its name")
    values: dict[str, JsonValue] = {}
    for tag, name in _EPISODE_FIELDS:
        value = _text(root, tag)
        if value:
            values[name] = value
    values.update(_ids(root, "episode"))
    attributes: dict[str, JsonValue] = {episode_attribute(season, episode): values} if values else {}
    return Nfo("episode", attributes, tags)


def _ids(root: Element, kind: NfoKind) -> dict[str, JsonValue]:
    ids: dict[str, JsonValue] = {}
    for element in root.findall("uniqueid"):
        kind_of_id = (element.get("type") or "").strip().lower()
        value = _clean(element.text)
        if value and _ID_TYPE.fullmatch(kind_of_id):
            ids.setdefault(f"{kind_of_id}_id", _id_value(value))
    for tag in ("tmdbid", "imdbid", "tvdbid"):
        value = _text(root, tag)
        if value:
            ids.setdefault(f"{tag[:-2]}_id", _id_value(value))
    legacy = _text(root, "id")
    if legacy and _IMDB.fullmatch(legacy):
        ids.setdefault("imdb_id", legacy)
    elif legacy and legacy.isascii() and legacy.isdigit() and len(legacy) < 16 and kind == "tvshow":
        ids.setdefault("tvdb_id", int(legacy))
    return ids


def _link_only(text: bytes) -> Nfo | MetadataFailure:
    decoded = text.decode("utf-8", "replace")
    ids: dict[str, JsonValue] = {}
    for pattern, name in _URL_IDS:
        found = pattern.search(decoded)
        if found:
            ids[name] = _id_value(found.group(1))
    if not ids:
        return MetadataFailure("neither XML nor a TMDB/IMDb/TVDB link")
    return Nfo("movie", ids)


def _id_value(text: str) -> JsonValue:
    """A numeric id as a number (TMDB's 194, as providers' APIs give it), any other as text."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 16 else text


def _clean(text: str | None) -> str:
    return unicodedata.normalize("NFC", text).strip() if text else ""


def _text(root: Element, tag: str) -> str:
    return _clean(root.findtext(tag))


def _texts(root: Element, tag: str) -> list[str]:
    return [t for t in (_clean(e.text) for e in root.findall(tag)) if t]


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None
