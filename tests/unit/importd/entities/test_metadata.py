from __future__ import annotations

import json
from pathlib import Path

import pytest

from importd.entities.metadata import (
    Attributes,
    Conflict,
    JsonValue,
    MetadataFailure,
    ResolveFailure,
    TableRows,
    is_filled,
    merge_attributes,
    read_metadata_json,
    read_sidecar,
    read_table,
    resolve_conflict,
    same_value,
)


def test_metadata_json_keys_become_attributes(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    path.write_text(
        json.dumps({"Age": 30, "notes": " Aime la danse ", "tags": ["a", "b"], "height": None, "": 1}),
        encoding="utf-8",
    )
    assert read_metadata_json(path.read_bytes()) == Attributes(
        {"age": 30, "notes": "Aime la danse", "tags": ["a", "b"]}
    )


def test_metadata_json_with_a_byte_order_mark_is_read() -> None:
    assert read_metadata_json('\ufeff{"âge": 3}'.encode()) == Attributes({"âge": 3})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"age": 1, "age": 2}', "key 'age' appears twice"),
        (b'{"Age": 1, "age": 2}', "attribute 'age' is given twice"),
        (b'{"nom": "\xe9lodie"}', "not UTF-8"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_bad_metadata_is_a_failure_with_a_reason(data: bytes, reason: str) -> None:
    result = read_metadata_json(data)
    assert isinstance(result, MetadataFailure)
    assert reason in result.reason


def test_sidecar_text_is_one_attribute() -> None:
    assert read_sidecar("  Née à Lyon.\n".encode(), "Notes") == Attributes({"notes": "Née à Lyon."})
    assert read_sidecar(b"\n\n", "notes") == Attributes({})
    assert isinstance(read_sidecar(b"\xff", "notes"), MetadataFailure)


def test_csv_tables_with_comma_or_semicolon() -> None:
    comma = read_table(b"name,age,notes\n\xc3\x89lodie,30,\nZo\xc3\xa9,,hello\n\n")
    semicolon = read_table("Nom;Âge\nÉlodie;30\n".encode(), key_column="nom")
    assert comma == TableRows((("Élodie", {"age": "30"}), ("Zoé", {"notes": "hello"})))
    assert semicolon == TableRows((("Élodie", {"âge": "30"}),))
    assert read_table(b"") == TableRows(())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"who,age\nA,1\n", "no 'name' column"),
        (b"name,age,Age\nA,1,2\n", "column 'age' appears twice"),
        (b"name,age\n,1\n", "row 2 has no 'name'"),
        (b"name,age\nA,1,2\n", "row 2 has 3 cells for 2 columns"),
    ],
)
def test_bad_tables_are_failures(data: bytes, reason: str) -> None:
    result = read_table(data)
    assert isinstance(result, MetadataFailure)
    assert reason in result.reason


def test_values_compare_after_light_normalisation() -> None:
    assert same_value(30, "30")
    assert same_value(30, 30.0)
    assert same_value("Élodie", "E\u0301lodie ")
    assert not same_value("Élodie", "élodie")
    assert not same_value(True, 1)
    assert not same_value("nan", float("nan"))
    assert same_value({"a": [1, "2"]}, {"a": ["1", 2]})
    assert not is_filled("  ") and not is_filled([]) and not is_filled(None)
    assert is_filled(0) and is_filled(False)


def test_merge_fills_gaps_and_records_every_difference_as_a_conflict() -> None:
    existing: dict[str, JsonValue] = {"age": 30, "notes": "", "eyes": "green"}
    incoming: dict[str, JsonValue] = {
        "Age": "31",
        "notes": "new notes",
        "EYES": "green ",
        "height": 170,
        "hair": None,
    }
    merged, conflicts = merge_attributes(
        existing, incoming, entity="character:élodie", source="Élodie/metadata.json"
    )
    assert merged == {"age": 30, "notes": "new notes", "eyes": "green", "height": 170}
    assert conflicts == [Conflict("character:élodie", "age", 30, "31", "Élodie/metadata.json")]
    assert existing == {"age": 30, "notes": "", "eyes": "green"}  # the input is not touched


def test_an_unchanged_second_pass_records_no_conflict() -> None:
    first, _ = merge_attributes({}, {"age": 30}, entity="e", source="m.json")
    second, conflicts = merge_attributes(first, {"age": 30}, entity="e", source="m.json")
    assert (second, conflicts) == ({"age": 30}, [])


def test_resolving_a_conflict_keeps_or_takes_the_new_value() -> None:
    attributes: dict[str, JsonValue] = {"age": 30, "notes": "x"}
    _, [conflict] = merge_attributes(attributes, {"age": 31}, entity="e", source="csv")
    assert resolve_conflict(attributes, conflict, "keep") == {"age": 30, "notes": "x"}
    assert resolve_conflict(attributes, conflict, "take_new") == {"age": 31, "notes": "x"}
    stale = resolve_conflict({"age": 32}, conflict, "take_new")
    assert isinstance(stale, ResolveFailure) and "stale" in stale.reason
    wrong = resolve_conflict(attributes, conflict, "merge")  # type: ignore[arg-type]
    assert isinstance(wrong, ResolveFailure) and "keep" in wrong.reason
