from __future__ import annotations

import unicodedata

import pytest

from importd.entities.patterns import PatternError, compile_pattern

NFD_SERIES = unicodedata.normalize("NFD", "Séries")


def captures(pattern: str, relpath: str) -> dict[str, str] | None:
    m = compile_pattern(pattern).match(relpath)
    return None if m is None else m.captures


def test_named_captures_stay_within_one_segment() -> None:
    assert captures("{character}/{scene_type}.mp4", "Élodie/intro.mp4") == {
        "character": "Élodie",
        "scene_type": "intro",
    }
    assert captures("{character}/{scene_type}.mp4", "Élodie/old/intro.mp4") is None
    assert captures("{character}/{scene_type}.mp4", "Élodie/.mp4") is None  # a capture is never empty


def test_captures_are_greedy_so_the_last_parentheses_hold_the_year() -> None:
    got = captures("Films/{title} ({year})/{file}", "Films/Film (Director's cut) (1998)/film.mkv")
    assert got == {"title": "Film (Director's cut)", "year": "1998", "file": "film.mkv"}


def test_int_captures_take_digits_only() -> None:
    pattern = compile_pattern("Films/{title} ({year:int})/*")
    assert pattern.numeric == frozenset({"year"})
    assert pattern.match("Films/Dune (1984)/dune.mkv") is not None
    assert pattern.match("Films/Dune (director)/dune.mkv") is None


def test_star_matches_within_a_segment_including_nothing() -> None:
    pattern = compile_pattern("{character}/source.*")
    assert pattern.match("Alice/source.png") is not None
    assert pattern.match("Alice/source.") is not None
    assert pattern.match("Alice/source.png/x") is None


def test_double_star_spans_any_number_of_segments() -> None:
    inner = compile_pattern("Films/**/{file}.srt")
    assert captures("Films/**/{file}.srt", "Films/a.srt") == {"file": "a"}
    assert inner.match("Films/x/y/z/a.srt") is not None
    leading = compile_pattern("**/{character} - intro.mp4")
    assert leading.match("Alice - intro.mp4") is not None
    assert leading.match("A/Alice - intro.mp4") is not None
    trailing = compile_pattern("Films/**")
    assert trailing.match("Films/a") is not None
    assert trailing.match("Films/a/b/c") is not None
    assert trailing.match("Films") is None  # a file needs a name below the folder


def test_alternatives_are_literal_choices_and_not_captured() -> None:
    pattern = "{Séries|Series|TV Shows}/{series}/{Saison|Season} {season:int}/*"
    for folder in ("Séries", "Series", "TV Shows"):
        got = captures(pattern, f"{folder}/Kaamelott/Saison 01/a.mkv")
        assert got == {"series": "Kaamelott", "season": "01"}
    assert captures(pattern, "Films/Kaamelott/Saison 01/a.mkv") is None


def test_literals_match_case_insensitively_and_captures_keep_spelling() -> None:
    got = captures(
        "{Séries|Series}/{series}/Saison {season}/{scene}.mp4", "SÉRIES/KaameLott/saison 01/Intro.MP4"
    )
    assert got == {"series": "KaameLott", "season": "01", "scene": "Intro"}


def test_literals_match_nfc_and_nfd_spellings_and_captures_keep_them() -> None:
    pattern = "{Séries|Series}/{series}/*"
    assert captures(pattern, f"{NFD_SERIES}/E\u0301lodie/a.mkv") == {"series": "E\u0301lodie"}
    # The pattern itself may arrive decomposed (a TOML file saved on macOS).
    assert captures(f"{NFD_SERIES}/{{series}}/*", "Séries/Élodie/a.mkv") == {"series": "Élodie"}


def test_surrogate_escaped_bytes_match_and_are_captured_as_they_are() -> None:
    assert captures("{character}/source.{ext}", "Caf\udce9/source.png") == {
        "character": "Caf\udce9",
        "ext": "png",
    }


def test_doubled_braces_are_literal_braces() -> None:
    assert captures("{{draft}}/{name}.txt", "{draft}/a.txt") == {"name": "a"}
    assert captures("{{draft}}/{name}.txt", "draft/a.txt") is None


def test_parentheses_and_regex_characters_are_literal() -> None:
    assert captures("a+b (c)/[x]/{n}.$", "a+b (c)/[x]/z.$") == {"n": "z"}
    assert captures("a+b (c)/[x]/{n}.$", "aab (c)/[x]/z.$") is None


def test_prefix_through_ends_at_the_segment_of_the_last_named_capture() -> None:
    m = compile_pattern("**/{series}/{Saison|Season} {season}/*").match("TV/Séries/Kaamelott/Saison 1/a.mkv")
    assert m is not None
    assert m.prefix_through(("series",)) == "TV/Séries/Kaamelott"
    assert m.prefix_through(("series", "season")) == "TV/Séries/Kaamelott/Saison 1"
    assert m.prefix_through(()) == ""


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "is empty"),
        ("/abs/{x}", "must be relative"),
        ("a//{x}", "empty segment"),
        ("a/{x}/", "empty segment"),
        ("a/../{x}", "'..' is not allowed"),
        ("a/**/**/{x}", "repeats '**'"),
        ("a/b**/{x}", "'**' must be a whole segment"),
        ("{character/x", "unclosed '{'"),
        ("a}/x", "unmatched '}'"),
        ("{a{b}}/x", "nested '{'"),
        ("{}/x", "empty braces"),
        ("{two words}/x", "capture names are letters"),
        ("{x:float}/y", "unknown capture kind 'float'"),
        ("{x:}/y", "missing capture kind"),
        ("{x}/{x}.mp4", "appears twice"),
        ("{a}{b}.mp4", "split is ambiguous"),
        ("{a}*.mp4", "'*' follows another capture"),
        ("*{a}.mp4", "split is ambiguous"),
        ("{Films|}/x", "empty alternative"),
    ],
)
def test_invalid_patterns_name_the_problem(pattern: str, problem: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert problem in info.value.problem
    assert repr(pattern) in str(info.value)
