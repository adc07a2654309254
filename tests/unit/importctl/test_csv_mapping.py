"""`import-csv`'s mapping file and `--map` options."""

from __future__ import annotations

from pathlib import Path

import pytest

from importctl.csv_mapping import MappingFileError, load_mapping, parse_map_option


def test_a_mapping_file_and_options_over_it(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'type = "character"\nkey = "id"\n[columns]\n"Réf" = "id"\n"Âge" = "age"\n', encoding="utf-8"
    )
    mapping = load_mapping(path)
    assert (mapping.entity_type, mapping.key) == ("character", "id")
    mapping.with_option(*parse_map_option("Âge=years"))
    mapping.with_option(*parse_map_option("a=b=notes"))
    assert mapping.columns == [("Réf", "id"), ("Âge", "years"), ("a=b", "notes")]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('kind = "x"', "kind: unknown key"),
        ('key = "folder"', "key: must be one of name, path, id"),
        ("columns = 3", "columns: must be a table"),
        ('[columns]\n"A" = 1', "columns.A: the field must be a non-empty string"),
        ("type = ", "invalid TOML"),
    ],
)
def test_bad_mapping_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingFileError) as err:
        load_mapping(path)
    assert problem in str(err.value)


@pytest.mark.parametrize("text", ["age", "=age", "Age="])
def test_bad_map_options(text: str) -> None:
    with pytest.raises(MappingFileError):
        parse_map_option(text)
