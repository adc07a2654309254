"""`[fields]` rules: parsed with errors that name the key, and a cell's text checked into the
value stored."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from importd.config import ConfigError, parse_config
from importd.entities.fields import FieldError, FieldFailure, FieldSpec, check_field, parse_fields


def spec(**raw: Any) -> FieldSpec:
    found = parse_fields({"character": {"x": raw}}).spec("character", "X")
    assert found is not None
    return found


def test_numbers_with_bounds() -> None:
    age = spec(type="int", min=0, max=150)
    assert check_field(age, " 42 ") == 42
    assert check_field(age, "+7") == 7
    assert check_field(age, "151") == FieldFailure("151 is above the maximum 150")
    assert check_field(age, "-1") == FieldFailure("-1 is below the minimum 0")
    assert check_field(age, "4.5") == FieldFailure("'4.5' is not a whole number")
    assert check_field(age, "1_000") == FieldFailure("'1_000' is not a whole number")
    height = spec(type="float", max=3)
    assert check_field(height, "1,62") == 1.62, "a decimal comma, as French spreadsheets write it"
    assert check_field(height, "1.5e0") == 1.5
    assert isinstance(check_field(height, "nan"), FieldFailure)
    assert isinstance(check_field(height, "3.5"), FieldFailure)


def test_dates_iso_and_day_first() -> None:
    iso = spec(type="date")
    assert check_field(iso, "1995-02-01") == "1995-02-01"
    failure = check_field(iso, "01/02/1995")
    assert isinstance(failure, FieldFailure) and "dayfirst = true" in failure.message
    day_first = spec(type="date", dayfirst=True, min=datetime.date(1900, 1, 1), max="2030-12-31")
    assert check_field(day_first, "01/02/1995") == "1995-02-01"
    assert check_field(day_first, "1.2.1995") == "1995-02-01"
    assert check_field(day_first, "1995-2-1") == "1995-02-01"
    assert isinstance(check_field(day_first, "31/02/2001"), FieldFailure), "no such day"
    assert check_field(day_first, "01/01/1850") == FieldFailure("1850-01-01 is before the minimum 1900-01-01")


def test_bool_enum_regex_and_text() -> None:
    flag = spec(type="bool")
    assert [check_field(flag, t) for t in ("yes", "FALSE", "1", "non")] == [True, False, True, False]
    assert isinstance(check_field(flag, "maybe"), FieldFailure)
    eyes = spec(type="enum", values=["Blue", "Grün"])
    assert check_field(eyes, "blue") == "Blue" and check_field(eyes, "GRÜN") == "Grün"
    assert check_field(eyes, "red") == FieldFailure("'red' is not one of Blue, Grün")
    code = spec(type="regex", pattern="C-[0-9]{4}")
    assert check_field(code, "C-0042") == "C-0042"
    assert isinstance(check_field(code, "C-0042x"), FieldFailure), "the whole text must match"
    assert check_field(None, " e\u0301 ") == "é", "plain text, NFC and stripped"


def test_required_and_names_folded() -> None:
    rules = parse_fields({"character": {"Âge": {"type": "int", "required": True}, "notes": {}}})
    assert rules.required("character") == ("âge",)
    assert rules.spec("character", "ÂGE") is not None and rules.spec("film", "âge") is None


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"type": "integer"}, "fields.character.age.type", "must be one of"),
        ({"type": "int", "min": 5, "max": 1}, "fields.character.age.min", "above max"),
        ({"type": "int", "min": 1.5}, "fields.character.age.min", "whole number"),
        ({"type": "text", "min": 1}, "fields.character.age.min", "only for"),
        ({"type": "enum"}, "fields.character.age.values", "needs values"),
        ({"type": "enum", "values": ["a", "A"]}, "fields.character.age.values", "listed twice"),
        ({"type": "regex", "pattern": "("}, "fields.character.age.pattern", "not a regular expression"),
        ({"type": "int", "dayfirst": True}, "fields.character.age.dayfirst", "only for"),
        ({"type": "date", "min": "yesterday"}, "fields.character.age.min", "must be a date"),
        ({"required": "yes"}, "fields.character.age.required", "true or false"),
        ({"typ": "int"}, "fields.character.age.typ", "unknown key"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(FieldError) as err:
        parse_fields({"character": {"age": raw}})
    assert err.value.key == key and problem in err.value.problem
    with pytest.raises(ConfigError) as config_err:
        parse_config({"fields": {"character": {"age": raw}}})
    assert config_err.value.key == key


def test_the_config_carries_the_rules() -> None:
    config = parse_config({"fields": {"character": {"age": {"type": "int"}}}})
    assert config.fields.spec("character", "age") == FieldSpec(type="int")
    assert parse_config({}).fields.by_type == {}
