from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest

from importd.entities.coverage import measure_coverage, unmatched_json
from importd.entities.episodes import parse_episode
from importd.entities.keys import id_key, name_key
from importd.entities.rules import (
    NO_LINK_ATTRIBUTES,
    PathMapping,
    RuleError,
    RuleSet,
    load_rule_set,
    parse_rules,
    rule_set_for_root,
    shipped_rule_sets,
)

REPO = Path(__file__).resolve().parents[4]


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def make_tree(root: Path, relpaths: list[str | bytes]) -> None:
    for relpath in relpaths:
        raw = relpath if isinstance(relpath, bytes) else os.fsencode(relpath)
        path = os.path.join(os.fsencode(root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"x")


def walk(root: Path) -> list[str]:
    """Relative paths as the catalog hands them over: bytes from the kernel, surrogate-escaped."""
    out = []
    base = os.fsencode(root)
    for folder, _dirs, files in os.walk(base):
        for name in files:
            out.append(os.fsdecode(os.path.relpath(os.path.join(folder, name), base)))
    return sorted(out)


def map_tree(rule_set: RuleSet, root: Path) -> dict[str, PathMapping | None]:
    return {relpath: rule_set.map_path(relpath) for relpath in walk(root)}


def mapped(mappings: dict[str, PathMapping | None], relpath: str) -> PathMapping:
    mapping = mappings[relpath]
    assert mapping is not None, relpath
    return mapping


# --- shipped sets on real trees -------------------------------------------------------------


def test_shipped_sets_are_package_data_and_linked_from_config() -> None:
    assert shipped_rule_sets() == ("characters", "films-series", "flat")
    for name in shipped_rule_sets():
        linked = REPO / "config" / "rules" / f"{name}.toml"
        package = REPO / "daemon" / "importd" / "entities" / "rulesets" / f"{name}.toml"
        assert linked.read_bytes() == package.read_bytes()
        assert load_rule_set(name).rules


def test_characters_tree_with_accents_spellings_and_case(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        [
            "Élodie/intro.mp4",
            "Élodie/Dance.MP4",
            "Élodie/source.png",
            "Élodie/clothed.JPG",
            "Élodie/metadata.json",
            "Élodie/notes.txt",
            nfd("Élodie") + "/outro.mov",  # the same name, decomposed: a second folder on Linux
            "ÉLODIE/Source.jpeg",
            "Zoé Martin/intro.mp4",
            "personnages.csv",
            "Zoé Martin/old/intro_v1.mp4",
            b"Caf\xe9/source.png",  # a Latin-1 name that is not UTF-8
        ],
    )
    m = map_tree(load_rule_set("characters"), tmp_path)

    intro = mapped(m, "Élodie/intro.mp4")
    assert (intro.entity_type, intro.role, intro.entity_name) == ("character", "scene_video", "Élodie")
    assert intro.link_attributes == {"scene_type": "intro"}
    assert intro.pre_approved
    assert mapped(m, "Élodie/Dance.MP4").link_attributes == {"scene_type": "Dance"}
    assert mapped(m, "Élodie/source.png").role == "source_image"
    assert mapped(m, "Élodie/clothed.JPG").role == "variant_image"
    assert mapped(m, "Élodie/metadata.json").role == "metadata"
    notes = mapped(m, "Élodie/notes.txt")
    assert (notes.role, notes.attribute) == ("sidecar", "notes")
    assert mapped(m, "personnages.csv").role == "table"
    assert mapped(m, "personnages.csv").key is None

    decomposed = mapped(m, nfd("Élodie") + "/outro.mov")
    upper = mapped(m, "ÉLODIE/Source.jpeg")
    assert decomposed.entity_name == nfd("Élodie")  # display spelling kept
    assert upper.entity_name == "ÉLODIE"
    assert intro.key == decomposed.key == upper.key == "name:élodie"

    stray = mapped(m, "Caf\udce9/source.png")
    assert stray.entity_name == "Caf\udce9"
    assert stray.key == "name:caf\\xe9"  # storable text

    assert m["Zoé Martin/old/intro_v1.mp4"] is None
    unmatched = measure_coverage(load_rule_set("characters"), walk(tmp_path))
    assert unmatched.unmatched == ("Zoé Martin/old/intro_v1.mp4",)
    assert unmatched.to_json() == {
        "files": [{"path": "Zoé Martin/old/intro_v1.mp4"}],
        "by_folder": {"Zoé Martin/old": 1},
    }


def test_films_series_tree(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        [
            "Films/Le Dîner de cons (1998)/Le Dîner de cons.mkv",
            "Films/Le Dîner de cons (1998)/Le Dîner de cons.fr.srt",
            "Films/Le Dîner de cons (1998)/poster.jpg",
            "Films/Le Dîner de cons (1998)/Bonus/making-of.mp4",
            "films/Amélie (2001).MKV",
            "Films/Playtime/Playtime.avi",
            "Films/Dune (1984)/dune.mkv",
            "Films/Dune (2021)/dune.mkv",
            "Séries/Kaamelott/Saison 01/Kaamelott S01E01.mkv",
            nfd("Séries") + "/Kaamelott/Saison 01/Kaamelott - 1x02.mkv",
            "Series/The Wire/Season 1/the.wire.s01e03.1080p.x264.mkv",
            "TV Shows/The Wire/S02/The Wire S02E01.mp4",
            "TV Shows/The Wire/Season 2/The Wire S02E02.en.srt",
            "Séries/Kaamelott/Kaamelott S02E05.mkv",
            "Séries/Kaamelott/poster.png",
            "Séries/Kaamelott/Specials/Kaamelott S00E01.mkv",
            "Documents/readme.txt",
        ],
    )
    m = map_tree(load_rule_set("films-series"), tmp_path)

    film = mapped(m, "Films/Le Dîner de cons (1998)/Le Dîner de cons.mkv")
    assert (film.entity_type, film.role, film.entity_name) == ("film", "film", "Le Dîner de cons (1998)")
    assert film.entity_attributes == {"year": 1998}
    assert film.scope == "Films/Le Dîner de cons (1998)"
    assert mapped(m, "Films/Le Dîner de cons (1998)/Le Dîner de cons.fr.srt").role == "subtitle"
    assert mapped(m, "Films/Le Dîner de cons (1998)/poster.jpg").role == "poster"
    assert mapped(m, "Films/Le Dîner de cons (1998)/Bonus/making-of.mp4").role == "extra"
    amelie = mapped(m, "films/Amélie (2001).MKV")
    assert (amelie.role, amelie.entity_name, amelie.entity_attributes) == (
        "film",
        "Amélie (2001)",
        {"year": 2001},
    )
    assert mapped(m, "Films/Playtime/Playtime.avi").entity_name == "Playtime"
    assert mapped(m, "Films/Dune (1984)/dune.mkv").key != mapped(m, "Films/Dune (2021)/dune.mkv").key

    def episode(relpath: str) -> tuple[str | None, str, object, object]:
        e = mapped(m, relpath)
        return (e.entity_name, e.role, e.link_attributes.get("season"), e.link_attributes.get("episode"))

    assert episode("Séries/Kaamelott/Saison 01/Kaamelott S01E01.mkv") == ("Kaamelott", "episode", 1, 1)
    assert episode(nfd("Séries") + "/Kaamelott/Saison 01/Kaamelott - 1x02.mkv") == (
        "Kaamelott",
        "episode",
        1,
        2,
    )
    assert episode("Series/The Wire/Season 1/the.wire.s01e03.1080p.x264.mkv") == ("The Wire", "episode", 1, 3)
    assert episode("TV Shows/The Wire/S02/The Wire S02E01.mp4") == ("The Wire", "episode", 2, 1)
    assert episode("Séries/Kaamelott/Kaamelott S02E05.mkv") == ("Kaamelott", "episode", 2, 5)
    assert (
        mapped(m, "Series/The Wire/Season 1/the.wire.s01e03.1080p.x264.mkv").key
        == mapped(m, "TV Shows/The Wire/S02/The Wire S02E01.mp4").key
    )
    assert mapped(m, "TV Shows/The Wire/Season 2/The Wire S02E02.en.srt").role == "subtitle"
    assert mapped(m, "Séries/Kaamelott/poster.png").role == "poster"
    assert mapped(m, "Séries/Kaamelott/Specials/Kaamelott S00E01.mkv").role == "extra"
    assert m["Documents/readme.txt"] is None


def test_flat_tagged_tree(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        [
            "Élodie - intro.mp4",
            "Élodie - source.png",
            "Élodie - clothed.jpg",
            "Élodie - metadata.json",
            "Élodie - notes.txt",
            "J/Jean-Pierre - Dance.MOV",
            "J/Jean Pierre_intro.mp4",
            nfd("Élodie") + "_outro.mp4",
            "Thumbs.db",
        ],
    )
    m = map_tree(load_rule_set("flat"), tmp_path)
    assert {(mapped(m, p).role, mapped(m, p).key) for p in m if p.startswith("Élodie")} == {
        ("scene_video", "name:élodie"),
        ("source_image", "name:élodie"),
        ("variant_image", "name:élodie"),
        ("metadata", "name:élodie"),
        ("sidecar", "name:élodie"),
    }
    dance = mapped(m, "J/Jean-Pierre - Dance.MOV")
    assert (dance.entity_name, dance.link_attributes) == ("Jean-Pierre", {"scene_type": "Dance"})
    assert mapped(m, "J/Jean Pierre_intro.mp4").entity_name == "Jean Pierre"
    assert mapped(m, nfd("Élodie") + "_outro.mp4").key == "name:élodie"
    assert m["Thumbs.db"] is None


def test_a_second_pass_and_a_moved_folder_give_the_same_keys(tmp_path: Path) -> None:
    rules = load_rule_set("characters")
    make_tree(tmp_path, ["Élodie/intro.mp4", "Élodie/source.png"])
    first = {p: mapped(map_tree(rules, tmp_path), p).key for p in walk(tmp_path)}
    second = {p: mapped(map_tree(rules, tmp_path), p).key for p in walk(tmp_path)}
    assert first == second
    (tmp_path / "Élodie").rename(tmp_path / "élodie ")
    moved = {mapped(map_tree(rules, tmp_path), p).key for p in walk(tmp_path)}
    assert moved == {"name:élodie"}


# --- rule semantics -------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    rules = parse_rules(
        [
            {
                "pattern": "{character}/source.{ext}",
                "entity_type": "character",
                "name": "{character}",
                "role": "a",
            },
            {
                "pattern": "{character}/{scene}.{ext}",
                "entity_type": "character",
                "name": "{character}",
                "role": "b",
            },
        ]
    )
    source = rules.map_path("Alice/source.mp4")
    scene = rules.map_path("Alice/intro.mp4")
    assert source is not None and (source.role, source.rule_index) == ("a", 0)
    assert scene is not None and (scene.role, scene.rule_index) == ("b", 1)
    assert scene.link_attributes == {"scene": "intro", "ext": "mp4"}
    assert rules.map_path("Alice/deep/intro.mp4") is None


def test_name_template_combines_captures_and_the_rest_are_link_attributes() -> None:
    rules = parse_rules(
        [
            {
                "pattern": "Films/{title} ({year})/{file}",
                "entity_type": "film",
                "name": "{title} ({year})",
                "role": "film",
                "entity_attributes": ["year"],
            }
        ]
    )
    m = rules.map_path("Films/Amélie (2001)/amelie.mkv")
    assert m is not None
    assert m.entity_name == "Amélie (2001)"
    assert m.entity_attributes == {"year": 2001}
    assert m.link_attributes == {"file": "amelie.mkv"}


def test_season_numbers_agree_across_saison_01_and_season_1() -> None:
    rules = parse_rules(
        [
            {
                "pattern": "{Séries|Series}/{series}/{Saison|Season} {season}/*",
                "entity_type": "series",
                "name": "{series}",
                "role": "episode",
            }
        ]
    )
    a = rules.map_path("Séries/Kaamelott/Saison 01/Kaamelott E03.mkv")
    b = rules.map_path("Series/kaamelott/Season 1/kaamelott.e04.mkv")
    assert a is not None and b is not None
    assert a.link_attributes == {"season": 1, "episode": 3}
    assert b.link_attributes == {"season": 1, "episode": 4}
    assert a.key == b.key


def test_match_key_modes() -> None:
    table = {"pattern": "**/{character}/source.{ext}", "entity_type": "character", "name": "{character}"}
    by_name = parse_rules([{**table, "role": "source_image"}]).map_path("A/Élodie/source.png")
    by_path = parse_rules([{**table, "role": "source_image"}], match_key="path").map_path(
        "A/Élodie/source.png"
    )
    by_id = parse_rules([{**table, "role": "source_image", "match_key": "id"}]).map_path(
        "A/Élodie/source.png"
    )
    assert by_name is not None and by_path is not None and by_id is not None
    assert by_name.key == name_key("ÉLODIE") == "name:élodie"
    assert by_path.key == "path:a/élodie"
    assert by_id.key is None and by_id.scope == "A/Élodie"
    assert by_id.with_key(id_key("C-0042") or "").key == "id:c-0042"
    assert id_key(None) is None and id_key("  ") is None and id_key(42) == "id:42"


def test_a_root_names_a_shipped_set_or_gives_inline_rules() -> None:
    assert rule_set_for_root("characters").name == "characters"
    assert rule_set_for_root("characters", match_key="path").rules[0].match_key == "path"
    inline = rule_set_for_root([{"pattern": "{c}/x", "entity_type": "t", "name": "{c}", "role": "r"}])
    assert inline.name == "inline"
    with pytest.raises(RuleError, match=r"no shipped rule set 'movies'.*characters, films-series, flat"):
        rule_set_for_root("movies")
    with pytest.raises(RuleError, match="must be a rule set name"):
        rule_set_for_root(3)


GOOD = {"pattern": "{character}/x", "entity_type": "character", "name": "{character}", "role": "r"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"pattern": "{a}{b}/x"}, "split is ambiguous"),
        ({"pattern": 3}, "pattern is required"),
        ({"name": "{nope}"}, "{nope} is not a capture of the pattern (character)"),
        ({"name": "{character!r}"}, "write plain {capture} fields"),
        ({"name": "{character"}, "name '{character'"),
        ({"name": None}, "name is required"),
        ({"entity_type": ""}, "entity_type must be a non-empty name"),
        ({"role": " r"}, "role must be a non-empty name"),
        ({"match_key": "uuid"}, "match_key must be one of name, path, id"),
        ({"entity_attributes": ["year"]}, "'year' is not a capture"),
        ({"role": "sidecar"}, "needs attribute"),
        ({"attribute": "notes"}, "only for rules with role = 'sidecar'"),
        ({"role": "table"}, "takes no name"),
        ({"pre_approved": "yes"}, "pre_approved must be true or false"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_invalid_rules_name_the_rule_and_the_problem(change: dict[str, object], problem: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules([GOOD, {**GOOD, **change}])
    assert info.value.where.startswith("rules[1]")
    assert problem in info.value.problem
    if isinstance(change.get("pattern", GOOD["pattern"]), str):
        assert repr(change.get("pattern", GOOD["pattern"])) in info.value.where


def test_empty_rule_list_is_refused() -> None:
    with pytest.raises(RuleError, match="is empty"):
        parse_rules([])


@pytest.mark.parametrize(
    ("name", "season", "episode"),
    [
        ("Kaamelott S01E02.mkv", 1, 2),
        ("kaamelott.s1e2.mkv", 1, 2),
        ("Show S01 E02.mkv", 1, 2),
        ("Show S01E02E03.mkv", 1, 2),
        ("the.wire.1x03.mkv", 1, 3),
        ("Show 1920x1080 E04.mkv", None, 4),
        ("Show - Ep 7.mkv", None, 7),
        (nfd("Épisode 12.mkv"), None, 12),
        ("Show 1080p x264.mkv", None, None),
        ("Sweet.mkv", None, None),
    ],
)
def test_episode_numbers_from_file_names(name: str, season: int | None, episode: int | None) -> None:
    assert parse_episode(name) == (season, episode)


def test_coverage_counts_per_rule_and_unmatched_by_folder() -> None:
    rules = load_rule_set("characters")
    paths = ["A/intro.mp4", "A/source.png", "A/x/y.mp4", "A/x/z.doc", "B/x/w.doc", "loose.txt"]
    coverage = measure_coverage(rules, paths)
    assert (coverage.total, coverage.mapped, coverage.share) == (6, 2, 2 / 6)
    assert sum(coverage.per_rule) == 2
    assert coverage.to_json()["by_folder"] == {"A/x": 2, ".": 1, "B/x": 1}
    assert list(coverage.to_json()["by_folder"]) == ["A/x", ".", "B/x"]
    assert unmatched_json([]) == {"files": [], "by_folder": {}}
    assert measure_coverage(rules, []).share == 1.0


def one_by_one(rule_set: RuleSet, relpath: str) -> PathMapping | None:
    """What `map_path` must answer: each rule tried in order."""
    for index, rule in enumerate(rule_set.rules):
        mapping = rule.map(relpath, index)
        if mapping is not None:
            return mapping
    return None


@pytest.mark.parametrize("set_name", shipped_rule_sets())
def test_the_joined_regex_picks_the_rule_that_trying_each_in_order_picks(set_name: str) -> None:
    rule_set = load_rule_set(set_name)
    paths = [
        "Films/Amélie (2001)/amelie.mkv",
        nfd("Films/Amélie (2001)/Amélie.MKV"),
        "Films/Amélie (2001)/poster.jpg",
        "Films/Amélie (2001)/extras/making of.mp4",
        "Films/Amélie (2001).mkv",
        "Films/Amélie (2001).nfo",
        "Films/Amélie/amelie.mkv",
        "MOVIES/Heat (1995)/heat.mkv",
        "Séries/Kaamelott/Saison 01/Kaamelott E03.mkv",
        "series/kaamelott/season 1/kaamelott.e04.srt",
        "TV Shows/Kaamelott/poster.png",
        "Characters/Alice/source.png",
        "Characters/Alice/intro.mp4",
        "Characters/Alice/intro.tags.json",
        "Characters/Alice/.artifacts/scenes.json",
        "Characters/characters.csv",
        "Alice/source.png",
        "Alice/intro.mp4",
        "Alice/deep/intro.mp4",
        "Archive/2009/lot 12/IMG_0001.JPG",
        "Archive/Films/x.mkv",
        "notes.txt",
        "Films",
        "Films/",
        "a" * 300 + "/b.mkv",
        "Films/\udcff\udcfe (1999)/f.mkv",  # undecodable bytes, surrogate-escaped
    ]
    assert rule_set.rules, set_name
    for relpath in paths:
        assert rule_set.map_path(relpath) == one_by_one(rule_set, relpath), relpath


def test_the_joined_regex_keeps_rule_order_when_several_match() -> None:
    rule_set = parse_rules(
        [
            {"pattern": "{a}/x.mkv", "entity_type": "film", "name": "{a}", "role": "film"},
            {"pattern": "**", "entity_type": "film", "name": "catch-all", "role": "extra"},
            {"pattern": "{title}/{b}.mkv", "entity_type": "film", "name": "{title}", "role": "film"},
        ]
    )
    first = rule_set.map_path("Heat/x.mkv")
    assert first is not None and (first.rule_index, first.entity_name) == (0, "Heat")
    second = rule_set.map_path("Heat/y.mkv")
    assert second is not None and (second.rule_index, second.entity_name) == (1, "catch-all")
    assert rule_set.map_path("Heat/y.mkv") == one_by_one(rule_set, "Heat/y.mkv")


def test_mappings_without_link_attributes_share_one_read_only_empty_mapping() -> None:
    """The live gap report keeps every linked file's link attributes for the daemon's life."""
    rules = load_rule_set("films-series")
    film = rules.map_path("Films/Heat (1995)/heat.mkv")
    episode = rules.map_path("Séries/Kaamelott/Saison 01/Kaamelott E03.mkv")
    assert film is not None and episode is not None
    assert film.link_attributes is NO_LINK_ATTRIBUTES and film.link_attributes == {}
    assert dict(episode.link_attributes) == {"season": 1, "episode": 3}
    with pytest.raises(TypeError):
        NO_LINK_ATTRIBUTES["x"] = 1  # type: ignore[index]
