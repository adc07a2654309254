from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.entities.expectations import ExpectationError, Expectations, TypeExpectation, parse_expectations
from importd.entities.gaps import (
    AttributeSet,
    Completeness,
    EntityRef,
    EntityRemoved,
    EntityRenamed,
    EntitySeen,
    EntityState,
    ExpectationsChanged,
    FileForgotten,
    FileId,
    FileLinked,
    FileMissing,
    FileRestored,
    FileUnlinked,
    GapEvent,
    GapReport,
    LinkState,
    LiveGapReport,
    Missing,
    compute_report,
    gap_text,
)
from importd.entities.keys import fold
from importd.entities.metadata import Attributes, JsonValue, merge_attributes, read_metadata_json
from importd.entities.rules import PathMapping, RuleSet, load_rule_set

CHARACTERS = parse_expectations(
    {"character": {"attributes": ["age", "notes"], "roles": ["source_image"], "scenes": ["intro", "dance"]}}
)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def write(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text, encoding="utf-8")


def snapshot(rule_set: RuleSet, root: Path) -> list[EntityState]:
    """What the catalog would hold after one run: entities, links keyed by relpath, metadata."""
    names: dict[tuple[str, str], str] = {}
    links: dict[tuple[str, str], dict[FileId, LinkState]] = {}
    attributes: dict[tuple[str, str], dict[str, JsonValue]] = {}
    for folder, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            relpath = os.path.relpath(os.path.join(folder, name), root)
            m = rule_set.map_path(relpath)
            if m is None or m.key is None or m.entity_name is None:
                continue
            ident = (m.entity_type, m.key)
            names.setdefault(ident, m.entity_name)
            links.setdefault(ident, {})[relpath] = LinkState(m.role, m.link_attributes)
            if m.role == "metadata":
                read = read_metadata_json((root / relpath).read_bytes())
                assert isinstance(read, Attributes)
                merged, _ = merge_attributes(
                    attributes.get(ident, {}), read.values, entity=m.key, source=relpath
                )
                attributes[ident] = merged
    return [EntityState(t, k, names[(t, k)], attributes.get((t, k), {}), links[(t, k)]) for t, k in names]


@pytest.fixture
def character_tree(tmp_path: Path) -> Path:
    write(
        tmp_path,
        {
            "Élodie/intro.mp4": "",
            "Élodie/Dance.MP4": "",
            "Élodie/source.png": "",
            "Élodie/metadata.json": json.dumps({"age": 30, "notes": "x"}),
            "Zoé/intro.mp4": "",
            "Zoé/metadata.json": json.dumps({"Age": 25}),
        },
    )
    return tmp_path


def test_report_lists_what_each_entity_misses(character_tree: Path) -> None:
    report = compute_report(snapshot(load_rule_set("characters"), character_tree), CHARACTERS)
    assert report.to_json() == {
        "completeness": {"percent": 70.0, "satisfied": 7, "required": 10, "orphaned": 0},
        "totals": {"attribute": 1, "role": 1, "scene": 1, "episode": 0},
        "entities": [
            {
                "type": "character",
                "name": "Zoé",
                "missing": [
                    {"kind": "attribute", "name": "notes"},
                    {"kind": "role", "name": "source_image"},
                    {"kind": "scene", "name": "dance"},
                ],
            }
        ],
        "orphaned": [],
    }
    assert report.to_text() == (
        "Completeness: 70.0% (7 of 10 requirements satisfied)\n"
        "Missing by kind: attribute 1, role 1, scene 1, episode 0\n"
        "\n"
        "character: Zoé\n"
        "  ☐ attribute notes\n"
        "  ☐ role source_image\n"
        "  ☐ scene dance\n"
    )
    assert gap_text(json.loads(json.dumps(report.to_json()))) == report.to_text()


def test_a_full_library_reports_nothing_missing() -> None:
    report = compute_report([EntityState("character", "k", "A", {"age": 1})], parse_expectations({}))
    assert report == GapReport(())
    assert report.to_text().endswith("Nothing missing.\n")
    assert report.completeness == Completeness(0, 0)
    assert report.to_json()["completeness"] == {
        "percent": 100.0,
        "satisfied": 0,
        "required": 0,
        "orphaned": 0,
    }


def test_deleting_a_source_image_opens_a_gap_and_restoring_closes_it(character_tree: Path) -> None:
    state = snapshot(load_rule_set("characters"), character_tree)
    live = LiveGapReport(CHARACTERS, state)
    assert live.report() == compute_report(state, CHARACTERS)

    changes = live.apply(FileMissing("Élodie/source.png"))
    assert len(changes) == 1 and changes[0].after is not None
    assert changes[0].after.missing == (Missing("role", "source_image"),)
    assert live.completeness() == Completeness(6, 10)
    assert [e["name"] for e in live.report().to_json()["entities"]] == ["Élodie", "Zoé"]

    live.apply(FileRestored("Élodie/source.png"))
    assert live.report() == compute_report(state, CHARACTERS)
    assert live.apply(FileRestored("Élodie/source.png")) == []  # nothing changed
    assert live.apply(FileMissing("never/linked.png")) == []


def test_an_expectation_added_on_reload_updates_the_report(character_tree: Path) -> None:
    state = snapshot(load_rule_set("characters"), character_tree)
    live = LiveGapReport(CHARACTERS, state)
    stricter = parse_expectations(
        {
            "character": {
                "attributes": ["age", "notes"],
                "roles": ["source_image"],
                "scenes": ["intro", "dance", "outro"],
            }
        }
    )
    changes = live.apply(ExpectationsChanged(stricter))
    assert len(changes) == 2
    assert live.report() == compute_report(state, stricter)
    assert live.completeness() == Completeness(7, 12)
    assert live.apply(ExpectationsChanged(stricter)) == []


def test_a_conflicting_metadata_file_is_reported_not_applied(character_tree: Path) -> None:
    state = {s.name: s for s in snapshot(load_rule_set("characters"), character_tree)}
    current = dict(state["Zoé"].attributes)
    changed = read_metadata_json(json.dumps({"age": 26, "notes": "new"}).encode())
    assert isinstance(changed, Attributes)
    merged, conflicts = merge_attributes(
        current, changed.values, entity="name:zoé", source="Zoé/metadata.json"
    )
    assert merged == {"age": 25, "notes": "new"}
    assert [(c.attribute, c.current, c.proposed) for c in conflicts] == [("age", 25, 26)]


def test_episodes_contiguous_per_season_up_to_the_highest_linked() -> None:
    def ep(season: int | None, episode: int, present: bool = True) -> LinkState:
        attributes = {"episode": episode} if season is None else {"season": season, "episode": episode}
        return LinkState("episode", attributes, present)

    links: dict[FileId, LinkState] = {
        1: ep(1, 1),
        2: ep(1, 2),
        3: ep(1, 4),
        4: ep(None, 6),  # no season: season 1
        5: ep(2, 1),
        6: ep(2, 3, present=False),  # went missing: still sets the highest number
        7: ep(0, 5),  # specials are never expected to be complete
        8: LinkState("episode", {}),  # no number at all
        9: LinkState("poster", {"season": 3, "episode": 9}),
    }
    series = EntityState("series", "name:kaamelott", "Kaamelott", {}, links)
    contiguous = compute_report([series], parse_expectations({"series": {"episodes": "contiguous"}}))
    assert contiguous.entities[0].missing == tuple(
        Missing("episode", name) for name in ("S01E03", "S01E05", "S02E02", "S02E03")
    )
    assert contiguous.completeness == Completeness(5, 9)

    counted = compute_report([series], parse_expectations({"series": {"episodes": 2}}))
    assert counted.entities[0].missing == (Missing("episode", "S02E02"),)
    empty = EntityState("series", "name:x", "X")
    assert [
        m.name
        for m in compute_report([empty], parse_expectations({"series": {"episodes": 2}})).entities[0].missing
    ] == [
        "S01E01",
        "S01E02",
    ]


def test_scene_names_and_attribute_names_compare_spelling_blind() -> None:
    links: dict[FileId, LinkState] = {"a": LinkState("scene_video", {"scene_type": nfd("Épilogue")})}
    entity = EntityState("character", "k", "A", {"ÂGE": 3, "notes": "  "}, links)
    exp = parse_expectations({"character": {"attributes": ["âge", "notes"], "scenes": ["épilogue"]}})
    assert compute_report([entity], exp).entities[0].missing == (Missing("attribute", "notes"),)


def test_live_attributes_are_set_and_cleared_under_their_folded_name() -> None:
    live = LiveGapReport(parse_expectations({"character": {"attributes": ["age"]}}))
    ref = EntityRef("character", "name:a", "A")
    live.apply(AttributeSet(ref, "Âge", 30))
    assert live.completeness() == Completeness(0, 1)  # "âge" is not "age"
    live.apply(AttributeSet(ref, "AGE", 30))
    assert live.completeness() == Completeness(1, 1)
    live.apply(AttributeSet(ref, "âGE", None))
    assert live.completeness() == Completeness(1, 1)
    live.apply(AttributeSet(ref, "Age", None))
    assert live.completeness() == Completeness(0, 1)


def test_percent_is_rounded_down_so_100_means_complete() -> None:
    assert Completeness(1999, 2000).percent == 99.9
    assert Completeness(2, 3).percent == 66.6
    assert Completeness(3, 3).percent == 100.0


def test_report_can_be_narrowed_to_a_type_or_an_entity(character_tree: Path) -> None:
    state = snapshot(load_rule_set("characters"), character_tree)
    report = compute_report(state, CHARACTERS)
    zoe = report.only(name="ZOÉ")
    assert [e.name for e in zoe.entities] == ["Zoé"]
    assert zoe.completeness == Completeness(2, 5)
    assert report.only(entity_type="series").entities == ()


def test_entities_sort_by_type_then_name_spelling_blind() -> None:
    exp = parse_expectations({"a": {"attributes": ["x"]}, "b": {"attributes": ["x"]}})
    state = [EntityState("b", "1", "zed"), EntityState("a", "2", "Zoé"), EntityState("a", "3", "élodie")]
    assert [(e.type, e.name) for e in compute_report(state, exp).entities] == [
        ("a", "élodie"),
        ("a", "Zoé"),
        ("b", "zed"),
    ]


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"character": []}, "expect.character", "must be a table"),
        ({"character": {"scene": ["a"]}}, "expect.character.scene", "unknown key"),
        ({"character": {"roles": "source_image"}}, "expect.character.roles", "array of non-empty strings"),
        ({"character": {"scenes": ["Intro", "intro"]}}, "expect.character.scenes", "listed twice"),
        ({"series": {"episodes": "all"}}, "expect.series.episodes", 'must be "contiguous"'),
        ({"series": {"episodes": 0}}, "expect.series.episodes", 'must be "contiguous"'),
        ({"series": {"episodes": True}}, "expect.series.episodes", 'must be "contiguous"'),
    ],
)
def test_invalid_expectations_name_the_key(table: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ExpectationError) as info:
        parse_expectations(table)
    assert info.value.key == key
    assert problem in info.value.problem


def test_expectations_parse_the_contract_shape() -> None:
    parsed = parse_expectations(
        {
            "character": {
                "attributes": ["age", "notes"],
                "roles": ["source_image"],
                "scenes": ["intro", "dance"],
            },
            "series": {"episodes": "contiguous"},
        }
    )
    assert parsed == Expectations(
        {
            "character": TypeExpectation(("age", "notes"), ("source_image",), ("intro", "dance"), None),
            "series": TypeExpectation((), (), (), "contiguous"),
        }
    )
    assert parse_expectations(None) == Expectations()


# --- property: the live report always equals a full recomputation --------------------------

MIXED = RuleSet("mixed", load_rule_set("films-series").rules + load_rule_set("characters").rules)
CHARACTER_NAMES = ["Élodie", nfd("Élodie"), "ÉLODIE", "Zoé", "Marc"]
CHARACTER_FILES = [
    "intro.mp4",
    "Dance.MP4",
    "outro.mov",
    "source.png",
    "clothed.jpg",
    "metadata.json",
    "x.doc",
]
SERIES_NAMES = ["Kaamelott", "kaamelott", "The Wire"]
SEASON_FOLDERS = ["Saison 01", "Season 1", "S02", "Saison 00"]
ATTRIBUTES = ["age", "Age", "notes", "NOTES"]
VALUES: list[JsonValue] = [None, None, "", "x", 30, [1]]


@st.composite
def tree_paths(draw: st.DrawFn) -> list[str]:
    characters = st.builds(
        lambda n, f: f"{n}/{f}", st.sampled_from(CHARACTER_NAMES), st.sampled_from(CHARACTER_FILES)
    )
    episodes = st.builds(
        lambda n, folder, s, e: (
            f"Séries/{n}/{folder}/{n} S{s:02d}E{e:02d}.mkv"
            if folder
            else f"Series/{n}/{n} S{s:02d}E{e:02d}.mkv"
        ),
        st.sampled_from(SERIES_NAMES),
        st.sampled_from([*SEASON_FOLDERS, ""]),
        st.integers(0, 2),
        st.integers(0, 5),
    )
    return draw(st.lists(st.one_of(characters, episodes), min_size=1, max_size=12, unique=True))


type_expectations = st.builds(
    TypeExpectation,
    attributes=st.lists(st.sampled_from(["age", "notes", "height"]), unique=True, max_size=2).map(tuple),
    roles=st.lists(
        st.sampled_from(["source_image", "variant_image", "scene_video", "episode"]), unique=True, max_size=2
    ).map(tuple),
    scenes=st.lists(st.sampled_from(["intro", "dance", "outro", "finale"]), unique=True, max_size=3).map(
        tuple
    ),
    episodes=st.sampled_from([None, "contiguous", 1, 3]),
)
expectations = st.dictionaries(
    st.sampled_from(["character", "series", "film"]), type_expectations, min_size=1, max_size=3
).map(Expectations)


@dataclass
class ModelEntity:
    name: str
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    links: dict[FileId, LinkState] = field(default_factory=dict)


@dataclass
class Model:
    """The plainest reading of each event, against which the live bookkeeping is checked."""

    expectations: Expectations
    entities: dict[tuple[str, str], ModelEntity] = field(default_factory=dict)

    def owner(self, file_id: FileId) -> ModelEntity | None:
        return next((e for e in self.entities.values() if file_id in e.links), None)

    def entity(self, ref: EntityRef) -> ModelEntity:
        return self.entities.setdefault((ref.type, ref.key), ModelEntity(ref.name))

    def apply(self, event: GapEvent) -> None:
        if isinstance(event, EntitySeen):
            self.entity(event.entity).name = event.entity.name
        elif isinstance(event, EntityRemoved):
            self.entities.pop((event.type, event.key), None)
        elif isinstance(event, EntityRenamed):
            ref = event.entity
            moved = self.entities.pop((ref.type, event.old_key), None)
            if moved is None:
                self.entity(ref)
                return
            into = self.entities.get((ref.type, ref.key))
            if into is not None:
                into.links.update(moved.links)
                into.attributes = {**moved.attributes, **into.attributes}
                moved = into
            moved.name = ref.name
            self.entities[(ref.type, ref.key)] = moved
        elif isinstance(event, FileLinked):
            old = self.owner(event.file_id)
            if old is not None:
                del old.links[event.file_id]
            self.entity(event.entity).links[event.file_id] = event.link
        elif isinstance(event, FileUnlinked):
            old = self.owner(event.file_id)
            if old is not None:
                del old.links[event.file_id]
        elif isinstance(event, FileMissing | FileRestored):
            old = self.owner(event.file_id)
            if old is not None:
                link = old.links[event.file_id]
                present = isinstance(event, FileRestored)
                if link.present != present or link.forgotten:
                    since = event.since if isinstance(event, FileMissing) else None
                    old.links[event.file_id] = LinkState(link.role, link.attributes, present, since)
        elif isinstance(event, FileForgotten):
            old = self.owner(event.file_id)
            if old is not None:
                link = old.links[event.file_id]
                old.links[event.file_id] = LinkState(
                    link.role, link.attributes, False, link.missing_since, forgotten=True
                )
        elif isinstance(event, AttributeSet):
            attributes = self.entity(event.entity).attributes
            if event.value is None:
                attributes.pop(fold(event.attribute), None)
            else:
                attributes[fold(event.attribute)] = event.value
        elif isinstance(event, ExpectationsChanged):
            self.expectations = event.expectations

    def state(self) -> list[EntityState]:
        return [
            EntityState(t, k, e.name, dict(e.attributes), dict(e.links))
            for (t, k), e in self.entities.items()
        ]


attribute_operations = st.tuples(
    st.just("attribute"), st.integers(0, 3), st.sampled_from(ATTRIBUTES), st.sampled_from(VALUES)
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("link"), st.integers(0, 99), st.integers(0, 99)),
        st.tuples(st.just("unlink"), st.integers(0, 99)),
        st.tuples(st.just("missing"), st.integers(0, 99), st.sampled_from([None, 1.0, 2.0])),
        st.tuples(st.just("restored"), st.integers(0, 99)),
        st.tuples(st.just("forgotten"), st.integers(0, 99)),
        st.tuples(st.just("renamed"), st.integers(0, 99), st.integers(0, 99)),
        attribute_operations,
        attribute_operations,  # twice as likely: setting then clearing one attribute takes two
        st.tuples(st.just("seen"), st.integers(0, 99), st.sampled_from(CHARACTER_NAMES + SERIES_NAMES)),
        st.tuples(st.just("remove"), st.integers(0, 99)),
        st.tuples(st.just("expect"), expectations),
    ),
    min_size=5,
    max_size=60,
)


def to_event(
    op: tuple[object, ...], paths: list[str], mapped: list[tuple[str, PathMapping]]
) -> GapEvent | None:
    if not mapped:
        return None
    kind = op[0]

    def ref(i: object) -> EntityRef:
        _, m = mapped[int(str(i)) % len(mapped)]
        assert m.key is not None and m.entity_name is not None
        return EntityRef(m.entity_type, m.key, m.entity_name)

    def file_id(i: object) -> str:
        return paths[int(str(i)) % len(paths)]

    if kind == "link":  # link file i where file j maps: j != i is a move to another entity
        _, target = mapped[int(str(op[2])) % len(mapped)]
        return FileLinked(file_id(op[1]), ref(op[2]), LinkState(target.role, target.link_attributes))
    if kind == "unlink":
        return FileUnlinked(file_id(op[1]))
    if kind == "missing":
        return FileMissing(file_id(op[1]), op[2])  # type: ignore[arg-type]
    if kind == "forgotten":
        return FileForgotten(file_id(op[1]))
    if kind == "renamed":
        old, new = ref(op[1]), ref(op[2])
        return EntityRenamed(old.key, EntityRef(old.type, new.key, new.name))
    if kind == "restored":
        return FileRestored(file_id(op[1]))
    if kind == "attribute":
        return AttributeSet(ref(op[1]), str(op[2]), op[3])  # type: ignore[arg-type]
    if kind == "seen":
        r = ref(op[1])
        return EntitySeen(EntityRef(r.type, r.key, str(op[2])))
    if kind == "remove":
        r = ref(op[1])
        return EntityRemoved(r.type, r.key)
    assert kind == "expect"
    return ExpectationsChanged(op[1])  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paths=tree_paths(), initial=expectations, ops=operations, seed_linked=st.booleans())
def test_live_report_equals_full_recomputation_after_every_event(
    paths: list[str], initial: Expectations, ops: list[tuple[object, ...]], seed_linked: bool
) -> None:
    model = Model(initial)
    if seed_linked:  # start from a first run over the tree, as the daemon does at start-up
        for path in paths:
            m = MIXED.map_path(path)
            if m is not None and m.key is not None and m.entity_name is not None:
                ref = EntityRef(m.entity_type, m.key, m.entity_name)
                model.apply(FileLinked(path, ref, LinkState(m.role, m.link_attributes)))
    mapped = [(p, m) for p in paths if (m := MIXED.map_path(p)) is not None and m.key and m.entity_name]
    live = LiveGapReport(initial, model.state())
    assert live.report() == compute_report(model.state(), model.expectations)

    for op in ops:
        event = to_event(op, paths, mapped)
        if event is None:
            continue
        before = live.report()
        changes = live.apply(event)
        model.apply(event)
        full = compute_report(model.state(), model.expectations)
        assert live.report() == full, event
        assert live.completeness() == full.completeness
        assert (changes == []) == (live.report() == before) or isinstance(event, EntityRenamed)
        for change in changes:
            gone_or_new = change.after or change.before
            if change.rename is not None and gone_or_new is None:
                continue  # a rename is announced even when the entity has nothing to report
            assert gone_or_new is not None
            assert live.entity(gone_or_new.type, gone_or_new.key) == change.after
    assert LiveGapReport(model.expectations, model.state()).report() == live.report()


def _alice(**links: LinkState) -> EntityState:
    return EntityState("character", "name:alice", "Alice", {"age": 3, "notes": "n"}, dict(links))


def test_an_entity_whose_every_file_is_gone_is_orphaned_once_and_left_out_of_completeness() -> None:
    gone = LinkState("source_image", {}, False, missing_since=1_700_000_000.0)
    intro = LinkState("scene_video", {"scene_type": "intro"}, False, missing_since=1_700_000_060.0)
    report = compute_report([_alice(a=gone, b=intro)], CHARACTERS)
    (orphan,) = report.orphaned
    assert (orphan.name, orphan.missing, orphan.orphaned_since) == ("Alice", (), 1_700_000_060.0)
    assert report.completeness == Completeness(0, 0, orphaned=1)
    assert report.to_json()["entities"] == []
    assert report.to_json()["orphaned"] == [
        {"type": "character", "name": "Alice", "since": "2023-11-14T22:14:20.000Z"}
    ]
    assert "character: Alice: all files gone since 2023-11-14T22:14:20.000Z" in report.to_text()
    # A type that expects nothing still shows its orphans: all its files are gone all the same.
    assert compute_report([_alice(a=gone)], Expectations({})).orphaned


def test_an_unreadable_file_is_there_and_forgotten_files_retire_their_entity() -> None:
    error = LinkState("source_image", {}, False)  # in error: not present, but not gone either
    gone = LinkState("scene_video", {"scene_type": "intro"}, False, missing_since=5.0)
    report = compute_report([_alice(a=error, b=gone)], CHARACTERS)
    assert not report.orphaned and report.entities[0].missing
    forgotten = LinkState("scene_video", {"scene_type": "intro"}, False, 5.0, forgotten=True)
    assert compute_report([_alice(b=forgotten)], CHARACTERS) == GapReport(()), "retired"
    live = LiveGapReport(CHARACTERS, [_alice(b=gone)])
    assert live.completeness() == Completeness(0, 0, 1)
    live.apply(FileForgotten("b"))
    assert live.report() == GapReport(()) and live.completeness() == Completeness(0, 0, 0)
    live.apply(FileRestored("b"))
    assert live.report().entities[0].missing, "back: judged on its requirements again"


def test_a_renamed_entity_keeps_its_files_and_announces_the_rename() -> None:
    intro = LinkState("scene_video", {"scene_type": "intro"})
    live = LiveGapReport(CHARACTERS, [_alice(a=intro)])
    (change,) = live.apply(EntityRenamed("name:alice", EntityRef("character", "name:alicia", "Alicia")))
    assert change.rename is not None and (change.rename.old_name, change.rename.new_name) == (
        "Alice",
        "Alicia",
    )
    assert change.before is not None and change.after is not None
    assert (change.before.name, change.after.name, change.after.missing) == (
        "Alice",
        "Alicia",
        change.before.missing,
    )
    assert live.entity("character", "name:alice") is None
    live.apply(FileMissing("a", 9.0))
    assert live.report().orphaned[0].name == "Alicia", "its file followed it"
