"""Kodi/Jellyfin NFO files read as facts, and hostile or broken ones refused with a reason."""

from __future__ import annotations

import pytest

from importd.entities.metadata import MetadataFailure
from importd.entities.nfo import MAX_NFO_BYTES, Nfo, episode_attribute, read_nfo


def nfo(text: str, name: str = "movie.nfo") -> Nfo:
    result = read_nfo(text.encode("utf-8"), name)
    assert isinstance(result, Nfo), result
    return result


def failure(data: bytes | str, name: str = "movie.nfo") -> str:
    result = read_nfo(data.encode("utf-8") if isinstance(data, str) else data, name)
    assert isinstance(result, MetadataFailure), result
    return result.reason


def test_a_movie_gives_title_year_plot_ids_genres_and_tags() -> None:
    movie = nfo(
        """\ufeff<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
        <movie>
          <title> Amélie </title><originaltitle>Le Fabuleux Destin d'Amélie Poulain</originaltitle>
          <year>2001</year><runtime>122</runtime><plot>Une serveuse.</plot><premiered>2001-04-25</premiered>
          <uniqueid type="tmdb" default="true">194</uniqueid><uniqueid type="IMDB">tt0211915</uniqueid>
          <tmdbid>999</tmdbid>
          <genre>Comédie</genre><genre>Romance</genre><genre>Comédie</genre><studio>UGC</studio>
          <tag>Paris</tag><tag>Paris</tag><tag>Montmartre</tag><tag>  </tag>
          <actor><name>Audrey Tautou</name></actor>
        </movie>"""
    )
    assert movie.kind == "movie"
    assert movie.attributes == {
        "title": "Amélie",
        "original_title": "Le Fabuleux Destin d'Amélie Poulain",
        "year": 2001,
        "runtime": 122,
        "plot": "Une serveuse.",
        "premiered": "2001-04-25",
        "tmdb_id": 194,  # uniqueid first: the <tmdbid> after it does not override it
        "imdb_id": "tt0211915",
        "genres": ["Comédie", "Romance"],
        "studios": ["UGC"],
    }
    assert movie.tags == ("Paris", "Montmartre")


def test_legacy_ids_and_a_tvshow() -> None:
    assert nfo("<movie><id>tt0211915</id><id>12</id></movie>").attributes == {"imdb_id": "tt0211915"}
    assert nfo("<movie><id>194</id></movie>").attributes == {}, "a bare number in a movie is ambiguous"
    # Digits int() refuses ('²' is a digit to str.isdigit()) are no id, and no crash.
    assert nfo("<tvshow><title>T</title><id>²</id></tvshow>").attributes == {"title": "T"}
    show = nfo("<tvshow><title>Kaamelott</title><id>79175</id><imdbid>tt0443370</imdbid></tvshow>")
    assert (show.kind, show.attributes) == (
        "tvshow",
        {"title": "Kaamelott", "imdb_id": "tt0443370", "tvdb_id": 79175},
    )


def test_an_episode_is_one_attribute_named_by_its_number() -> None:
    episode = nfo(
        "<episodedetails><title>Heat</title><season>1</season><episode>2</episode>"
        "<aired>2005-01-03</aired><uniqueid type='tvdb'>307</uniqueid><tag>pilot</tag></episodedetails>",
        "Kaamelott S09E09.nfo",
    )
    assert episode.kind == "episode" and episode.tags == ("pilot",)
    assert episode.attributes == {"s01e02": {"title": "Heat", "aired": "2005-01-03", "tvdb_id": 307}}
    from_name = nfo("<episodedetails><title>Heat</title></episodedetails>", "Kaamelott 2x05.nfo")
    assert list(from_name.attributes) == [episode_attribute(2, 5)] == ["s02e05"]
    assert "no <season>/<episode>" in failure("<episodedetails><title>x</title></episodedetails>", "x.nfo")


def test_a_season_nfo_gives_nothing_and_a_link_only_nfo_gives_its_ids() -> None:
    assert nfo("<season><title>Saison 1</title></season>") == Nfo("season", {})
    link = nfo("https://www.themoviedb.org/movie/194-amelie\nhttps://www.imdb.com/title/tt0211915/\n")
    assert link.attributes == {"tmdb_id": 194, "imdb_id": "tt0211915"}
    assert "neither XML nor" in failure("just some notes")


def test_entity_expansion_is_refused_not_expanded() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        "<movie><title>&lol3;</title></movie>"
    )
    assert failure(laughs).startswith("refused: the XML declares entities")


@pytest.mark.parametrize(
    "declaration",
    [
        '<!DOCTYPE movie [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE movie [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]>',
        '<!DOCTYPE movie [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>',
    ],
)
def test_external_entities_are_refused(declaration: str) -> None:
    reason = failure(f'<?xml version="1.0"?>{declaration}<movie><title>&x;</title></movie>')
    assert reason.startswith("refused:")


def test_malformed_wrong_root_and_oversized_files_are_failures() -> None:
    assert failure("<movie><title>x</movie>").startswith("malformed XML:")
    assert failure("<movie></movie><movie></movie>").startswith("malformed XML:")
    assert "root element <html> is not a Kodi NFO" in failure("<html></html>")
    big = b"<movie><plot>" + b"x" * MAX_NFO_BYTES + b"</plot></movie>"
    assert "larger than 1 MiB" in failure(big)
    assert failure(b"<movie><title>\xff\xfe</title></movie>").startswith("malformed XML:")
    assert failure('<?xml version="1.0" encoding="klingon"?><movie/>').startswith("malformed XML:")


def test_latin1_declared_encoding_is_honoured() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><movie><title>Amélie</title></movie>'
    result = read_nfo(data.encode("latin-1"))
    assert isinstance(result, Nfo) and result.attributes == {"title": "Amélie"}
