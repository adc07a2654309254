"""The preview's pure stages: mapping paths, applying metadata, judging against the catalog."""

from __future__ import annotations

from importd.entities import load_rule_set, parse_expectations
from importd.entities.preview import judge, map_paths, read_into, resulting_report

RULES = load_rule_set("characters")
EXPECT = parse_expectations({"character": {"attributes": ["age"], "roles": ["source_image"]}})


def test_map_read_judge_and_the_resulting_report() -> None:
    paths = [
        b"Alice/source.jpg",
        b"Alice/metadata.json",
        b"Bob/intro.mp4",
        b"notes/todo.txt",
        b"personnages.csv",
    ]
    tree = map_paths(paths, RULES, 1)
    assert (tree.files, tree.mapped, dict(tree.unmatched_by_folder)) == (5, 4, {"notes": 1})
    for relpath, mapping in tree.reads:
        content = {b"Alice/metadata.json": b'{"age": 30}', b"personnages.csv": b"name,age\nBob,41\nCy,9\n"}
        read_into(tree, relpath, mapping, content.get(relpath), None)
    assert set(tree.entities) == {
        ("character", "name:alice"),
        ("character", "name:bob"),
        ("character", "name:cy"),
    }
    held = {("character", "name:bob"): ("Bob", {"age": 40})}
    judged = {j.entity.name: j for j in judge(tree, held, lambda key: {b"Bob/intro.mp4"})}
    assert judged["Alice"].action == "create" and judged["Alice"].new_files == 2
    bob = judged["Bob"]
    assert bob.action == "unchanged", "a differing value alone is no update"
    assert [(c.field, c.current, c.proposed, c.conflict) for c in bob.changes] == [("age", 40, "41", True)]
    assert judged["Cy"].action == "create" and judged["Cy"].new_files == 0
    report = resulting_report(judged.values(), held, EXPECT)
    missing = {e.name: [m.name for m in e.missing] for e in report.entities if e.missing}
    assert missing == {"Bob": ["source_image"], "Cy": ["source_image"]}


def test_an_unreadable_or_bad_metadata_file_is_an_error_of_its_entity() -> None:
    tree = map_paths([b"Alice/metadata.json"], RULES, 1)
    ((relpath, mapping),) = tree.reads
    read_into(tree, relpath, mapping, b"{not json", None)
    read_into(tree, relpath, mapping, None, "cannot read: Permission denied")
    (alice,) = tree.entities.values()
    assert len(alice.errors) == 2 and "Permission denied" in alice.errors[1]
