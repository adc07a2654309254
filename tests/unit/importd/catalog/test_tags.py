"""Tags on a real catalog: matched by folded name, colours fill in, links are idempotent."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from importd.catalog.tags import ensure_tags, tag_counts, tag_file, tags_of_files
from tests.unit.importd.catalog.conftest import register


def test_tags_are_one_per_folded_name_and_a_colour_fills_in(catalog: Connection) -> None:
    first = ensure_tags(catalog, {"Outdoor": None, "Studio": "#ff0000"}, 1.0)
    again = ensure_tags(catalog, {"outdoor": "#00ff00", "  ": None}, 2.0)
    assert again["outdoor"].id == first["Outdoor"].id and again["outdoor"].name == "Outdoor"
    assert again["outdoor"].color == "#00ff00", "a colour fills in where there was none"
    assert ensure_tags(catalog, {"STUDIO": "#0000ff"}, 3.0)["STUDIO"].color == "#ff0000", "never overwritten"
    register(catalog, {b"a.jpg": "a" * 64})
    tag_file(catalog, 1, [first["Outdoor"].id, first["Studio"].id], "legacy.db", 4.0)
    tag_file(catalog, 1, [first["Outdoor"].id], "legacy.db", 5.0)
    assert [t.name for t in tags_of_files(catalog, [1])[1]] == ["Outdoor", "Studio"]
    assert [(c.tag.name, c.files, c.entities) for c in tag_counts(catalog)] == [
        ("Outdoor", 1, 0),
        ("Studio", 1, 0),
    ]
