"""Columns bound to fields, rows read into typed values with their errors, and planned against
what an entity holds."""

from __future__ import annotations

import pytest

from importd.entities.fields import parse_fields
from importd.imports.csv_mapping import (
    BoundColumns,
    Change,
    CsvImportSpec,
    MappingError,
    SeenKeys,
    bind_columns,
    file_key,
    parse_row,
    plan_row,
)

RULES = parse_fields({"character": {"age": {"type": "int", "max": 150}, "code": {"required": True}}})
HEADER = ["Nom", "Âge", "Code", "Notes"]


def spec(key: str = "name", **columns: str) -> CsvImportSpec:
    pairs = tuple(columns.items()) or (("nom", "name"), ("ÂGE", "Age"), ("Code", "code"))
    return CsvImportSpec("character", key, pairs)


def test_columns_are_bound_case_and_accents_aside() -> None:
    cols = bind_columns(HEADER, spec())
    assert cols == BoundColumns(
        key=(0, "Nom"), name=(0, "Nom"), attributes=((1, "Âge", "age"), (2, "Code", "code")), width=4
    )
    by_id = bind_columns(["Ref", "Nom"], CsvImportSpec("character", "id", (("Ref", "id"), ("Nom", "name"))))
    assert (by_id.key, by_id.name, by_id.attributes) == ((0, "Ref"), (1, "Nom"), ())


@pytest.mark.parametrize(
    ("header", "mapping", "problem"),
    [
        (HEADER, spec(Name="name"), "no column 'Name' in the file (columns: 'Nom', 'Âge', 'Code', 'Notes')"),
        (["Nom", "nom"], spec(Nom="name"), "column 'Nom' appears 2 times"),
        (HEADER, spec(Nom="name", Notes="age", Code="AGE"), "field 'age' is mapped from two columns"),
        (HEADER, spec(Notes="notes"), "--key name needs a column mapped to 'name'"),
        (HEADER, spec("path", Nom="name"), "--key path needs a column mapped to 'path'"),
    ],
)
def test_mappings_that_do_not_fit(header: list[str], mapping: CsvImportSpec, problem: str) -> None:
    with pytest.raises(MappingError) as err:
        bind_columns(header, mapping)
    assert problem in str(err.value)


def test_a_row_read_into_values_and_errors() -> None:
    cols = bind_columns(HEADER, spec())
    row = parse_row(cols, RULES, "character", 7, [" Élodie ", "31", "C-1", "ignored"])
    assert (row.row, row.key, row.values, row.errors) == (7, "Élodie", {"age": 31, "code": "C-1"}, [])
    blank = parse_row(cols, RULES, "character", 8, ["Zoé", "", ""])
    assert blank.values == {} and blank.errors == [], "blank cells and short rows are no value"
    bad = parse_row(cols, RULES, "character", 9, ["", "200", "x", "y", "extra"])
    assert bad.errors == [
        ("", "5 cells for 4 columns"),
        ("Nom", "no key: the cell is blank"),
        ("Âge", "200 is above the maximum 150"),
    ]


def test_file_keys_fold_like_the_catalog() -> None:
    assert file_key("name", " ÉLODIE ") == file_key("name", "e\u0301lodie") == "name:élodie"
    assert file_key("id", "C-0042") == "id:c-0042"
    assert file_key("path", "./Élodie//Scènes/") == "path:élodie/scènes"
    assert file_key("path", "/") is None


def test_plans() -> None:
    cols = bind_columns(HEADER, spec())
    row = parse_row(cols, RULES, "character", 2, ["Élodie", "31", "C-1"])
    assert plan_row({"Age": 30, "code": "C-1"}, row, RULES, "character", overwrite=False).action == "conflict"
    plan = plan_row({"Age": 30, "code": "C-1"}, row, RULES, "character", overwrite=True)
    assert (plan.action, plan.changes) == ("update", (Change("Age", 30, 31, False),))
    assert (
        plan_row({"age": "31", "code": "C-1"}, row, RULES, "character", overwrite=False).action == "unchanged"
    )
    created = plan_row(None, row, RULES, "character", overwrite=False)
    assert created.action == "create" and {c.field for c in created.changes} == {"age", "code"}
    no_code = parse_row(cols, RULES, "character", 3, ["Zoé", "20", ""])
    assert plan_row({"code": "C-2"}, no_code, RULES, "character", overwrite=False).action == "update"
    missing = plan_row({}, no_code, RULES, "character", overwrite=False)
    assert (missing.action, missing.errors) == ("invalid", (("Code", "code is required"),))


def test_seen_keys_remember_the_first_row_as_they_grow() -> None:
    seen = SeenKeys(capacity=4)
    for row in range(2, 5002):
        assert seen.first(f"name:n{row}", row) == row
    assert len(seen) == 5000
    assert seen.first("name:n17", 9000) == 17 and seen.first("name:n5001", 9001) == 5001
    assert len(seen) == 5000
