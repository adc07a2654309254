"""JSON sidecars, tags sidecars and scenes files read as facts; the shipped rule sets give them
their roles before any catch-all."""

from __future__ import annotations

import json

import pytest

from importd.entities import load_rule_set
from importd.entities.metadata import MetadataFailure
from importd.entities.sidecars import (
    SidecarFacts,
    read_facts,
    read_scenes_json,
    read_tags_json,
    read_video_json,
    sidecar_stem,
    source_kind,
)


def ok(result: SidecarFacts | MetadataFailure) -> SidecarFacts:
    assert isinstance(result, SidecarFacts), result
    return result


def bad(result: SidecarFacts | MetadataFailure) -> str:
    assert isinstance(result, MetadataFailure), result
    return result.reason


def js(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_video_json_is_attributes_and_its_tags_go_on_the_video() -> None:
    facts = ok(read_video_json(js({"Director": "Jeunet", "rating": 8, "tags": ["vu", "Vu", "4k"]})))
    assert facts.attributes == {"director": "Jeunet", "rating": 8}
    assert facts.file_tags == (("vu", None), ("4k", None)) and facts.entity_tags == ()
    assert "tags must be a list" in bad(read_video_json(js({"tags": "vu"})))
    assert "expected a JSON object" in bad(read_video_json(js([1, 2])))


def test_a_tags_json_is_a_list_or_an_object() -> None:
    assert ok(read_tags_json(js(["a", {"name": "B", "color": "#00ff00"}]))).file_tags == (
        ("a", None),
        ("B", "#00ff00"),
    )
    facts = ok(read_tags_json(js({"tags": ["a"], "entity_tags": [{"name": "French", "color": "blue"}]})))
    assert (facts.file_tags, facts.entity_tags) == ((("a", None),), (("French", "blue"),))
    assert "unknown key 'colour'" in bad(read_tags_json(js({"colour": []})))
    assert "is not #rrggbb" in bad(read_tags_json(js([{"name": "x", "color": "url(javascript:1)"}])))
    assert "a tag is a name" in bad(read_tags_json(js([3])))
    assert "more than 1000 tags" in bad(read_tags_json(js([str(i) for i in range(1001)])))
    assert "invalid JSON" in bad(read_tags_json(b"[1,"))
    assert "not UTF-8" in bad(read_tags_json(b'["\xff"]'))


def test_scenes_with_times_in_seconds_or_clock_form() -> None:
    facts = ok(
        read_scenes_json(
            js(
                {
                    "scenes": [
                        {"type": " intro ", "start": 0, "end": "01:30.5", "video": "intro.mp4"},
                        {"type": "dance", "start": "1:00:00", "title": "Finale"},
                    ]
                }
            )
        )
    )
    assert facts.attributes == {
        "scenes": [
            {"type": "intro", "start": 0.0, "end": 90.5, "video": "intro.mp4"},
            {"type": "dance", "start": 3600.0, "title": "Finale"},
        ]
    }
    assert ok(read_scenes_json(js([{"type": "a"}]))).attributes == {"scenes": [{"type": "a"}]}
    assert ok(read_scenes_json(js([]))).attributes == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"scene": []}, 'expected {"scenes"'),
        ([{"start": 1}], "scene 1: 'type' is required"),
        ([{"type": "a", "start": 5, "end": 2}], "end (2 s) is before start (5 s)"),
        ([{"type": "a", "start": "soon"}], "is not seconds"),
        ([{"type": "a", "start": True}], "is not seconds"),
        ([{"type": "a", "video": "../x.mp4"}], "video must be a file name"),
        ([{"type": "a", "length": 3}], "unknown key 'length'"),
        ("scenes", "expected a list of scenes"),
    ],
)
def test_bad_scenes_are_failures(value: object, reason: str) -> None:
    assert reason in bad(read_scenes_json(js(value)))


def test_read_facts_dispatches_by_role() -> None:
    assert ok(read_facts("nfo", b"<movie><title>A</title><tag>t</tag></movie>", "A.nfo")) == SidecarFacts(
        {"title": "A"}, entity_tags=(("t", None),)
    )
    episode = ok(read_facts("nfo", b"<episodedetails><tag>t</tag></episodedetails>", "S S01E02.nfo"))
    assert episode.file_tags == (("t", None),) and episode.attributes == {}
    assert ok(read_facts("metadata", b'{"age": 3}', "metadata.json")).attributes == {"age": 3}
    assert ok(read_facts("sidecar", b" likes tea \n", "notes.txt", "notes")).attributes == {
        "notes": "likes tea"
    }
    assert ok(read_facts("video_tags", b'["x"]', "a.tags.json")).file_tags == (("x", None),)
    assert [source_kind(r) for r in ("nfo", "video_json", "scenes", "metadata")] == [
        "nfo",
        "sidecar",
        "sidecar",
        "metadata",
    ]
    assert [sidecar_stem(n) for n in ("Amélie.tags.json", "Amélie.JSON", "Amélie.nfo", "x.txt")] == [
        "Amélie",
        "Amélie",
        "Amélie",
        "x.txt",
    ]


@pytest.mark.parametrize(
    ("rule_set", "path", "role", "name"),
    [
        ("films-series", "Films/Amélie (2001)/movie.nfo", "nfo", "Amélie (2001)"),
        ("films-series", "Movies/Amélie (2001)/Amélie.nfo", "nfo", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001).nfo", "nfo", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001)/Amélie.tags.json", "video_tags", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001)/Amélie.json", "video_json", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001)/.artifacts/scenes.json", "scenes", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001)/Amélie.mkv", "film", "Amélie (2001)"),
        ("films-series", "Films/Amélie (2001)/notes/readme.txt", "extra", "Amélie (2001)"),
        ("films-series", "Films/Playtime/Playtime.nfo", "nfo", "Playtime"),
        ("films-series", "Films/Playtime.tags.json", "video_tags", "Playtime"),
        ("films-series", "Séries/Kaamelott/tvshow.nfo", "nfo", "Kaamelott"),
        ("films-series", "Séries/Kaamelott/Saison 01/Kaamelott S01E02.nfo", "nfo", "Kaamelott"),
        ("films-series", "TV Shows/Kaamelott/Kaamelott S01E02.tags.json", "video_tags", "Kaamelott"),
        ("films-series", "Séries/Kaamelott/Saison 01/Kaamelott S01E02.mkv", "episode", "Kaamelott"),
        ("characters", "Élodie/intro.tags.json", "video_tags", "Élodie"),
        ("characters", "Élodie/intro.json", "video_json", "Élodie"),
        ("characters", "Élodie/metadata.json", "metadata", "Élodie"),
        ("characters", "Élodie/.artifacts/scenes.json", "scenes", "Élodie"),
        ("flat", "2020/Élodie - intro.tags.json", "video_tags", "Élodie"),
        ("flat", "Élodie - metadata.json", "metadata", "Élodie"),
    ],
)
def test_the_shipped_rule_sets_read_sidecars_before_their_catch_alls(
    rule_set: str, path: str, role: str, name: str
) -> None:
    mapping = load_rule_set(rule_set).map_path(path)
    assert mapping is not None and (mapping.role, mapping.entity_name) == (role, name)
