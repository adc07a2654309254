"""Reading spreadsheet exports as they come: encodings, delimiters, quoted newlines, row
numbers, and the file streamed rather than read whole."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from importd.imports.csv_rows import CsvReadError, detect_format, read_records


def rows(path: Path) -> list[tuple[int, list[str]]]:
    return list(read_records(path, detect_format(path)))


@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        ("name,âge\nÉlodie,30\n".encode(), "utf-8", ","),
        (codecs.BOM_UTF8 + "name;âge\nÉlodie;30\n".encode(), "utf-8-sig", ";"),
        ("name\tâge\nÉlodie\t30\n".encode("utf-16"), "utf-16", "\t"),
        ("name\tâge\nÉlodie\t30\n".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""]), "utf-16", "\t"),
        ("name;âge\nÉlodie;30\n".encode("cp1252"), "cp1252", ";"),
    ],
)
def test_encodings_and_delimiters(tmp_path: Path, data: bytes, encoding: str, delimiter: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    fmt = detect_format(path)
    assert (fmt.encoding, fmt.delimiter) == (encoding, delimiter)
    assert (fmt.warning is not None) == (encoding == "cp1252")
    assert rows(path) == [(1, ["name", "âge"]), (2, ["Élodie", "30"])]


def test_a_late_non_utf8_byte_is_found(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"name,notes\n" + b"a,b\n" * 300_000 + "z,café\n".encode("cp1252"))
    fmt = detect_format(path)
    assert fmt.encoding == "cp1252" and fmt.warning is not None and "byte 1200016" in fmt.warning
    assert rows(path)[-1] == (300_002, ["z", "café"])


def test_several_delimiters_in_the_header_are_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name;notes, more\nÉlodie;a, b, c\nZoé;d\n", encoding="utf-8")
    assert detect_format(path).delimiter == ";"


def test_quoted_newlines_blank_lines_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        'name,notes\r\n"Élodie","two\nlines"\r\n\r\n ,\r\nZoé,"a ""quote"""\r\n', encoding="utf-8"
    )
    assert rows(path) == [
        (1, ["name", "notes"]),
        (2, ["Élodie", "two\nlines"]),
        (5, ["Zoé", 'a "quote"']),
    ]


def test_one_column_and_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name\nÉlodie\n", encoding="utf-8")
    assert detect_format(path).delimiter == "," and rows(path) == [(1, ["name"]), (2, ["Élodie"])]
    path.write_bytes(b"")
    assert rows(path) == []


def test_an_unreadable_record_is_an_error_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name,notes\nÉlodie," + "x" * 200_000 + "\n", encoding="utf-8")
    records = read_records(path, detect_format(path))
    assert next(records) == (1, ["name", "notes"])
    with pytest.raises(CsvReadError) as err:
        next(records)
    assert err.value.row == 2 and "field larger than field limit" in err.value.message


def test_records_are_streamed(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("name\n")
        for i in range(50_000):
            fh.write(f"n{i}\n")
    records = read_records(path, detect_format(path))
    assert next(records) == (1, ["name"])
    assert next(records) == (2, ["n0"])
    assert sum(1 for _ in records) == 49_999
