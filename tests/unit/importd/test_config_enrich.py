"""`[enrich]`: off unless a provider is named, validated like the rest (file, key, problem), and
the key never in an error's text nor in the config's repr."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from importd.config import ConfigError, parse_config

SECRET = "tok-9f8e7d6c5b4a"


def enrich(**values: Any) -> dict[str, Any]:
    return {"enrich": {"provider": "tmdb", **values}}


def problem(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/etc/importd/importd.toml"))
    return err.value


def test_off_without_the_section_or_without_a_provider() -> None:
    assert parse_config({}).enrich is None
    assert parse_config({"enrich": {"rate_limit": 5}}).enrich is None


def test_defaults(tmp_path: Path) -> None:
    got = parse_config({"state_dir": str(tmp_path), **enrich(key=SECRET)}).enrich
    assert got is not None
    assert (got.rate_limit, got.rate_window_seconds, got.min_confidence, got.order) == (
        40,
        10.0,
        0.96,
        "newest",
    )
    assert got.cache_dir == tmp_path / "enrich-cache"
    assert got.base_url == "https://api.themoviedb.org/3"
    assert got.key.reveal() == SECRET
    assert SECRET not in repr(got) and SECRET not in repr(parse_config(enrich(key=SECRET)))


def test_the_key_file_and_the_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tmdb-key").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    got = parse_config(enrich(key_file="tmdb-key")).enrich
    assert got is not None and got.key.reveal() == SECRET
    got = parse_config(enrich(key_file=str(tmp_path / "tmdb-key"))).enrich
    assert got is not None and got.key.reveal() == SECRET
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    err = problem(enrich(key_file="tmdb-key"))
    assert err.key == "enrich.key_file" and "CREDENTIALS_DIRECTORY" in err.problem
    err = problem(enrich(key_file=str(tmp_path / "absent")))
    assert err.key == "enrich.key_file" and "no such file" in err.problem


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({}, "enrich.key", "exactly one"),
        ({"key": SECRET, "key_file": "/x"}, "enrich.key", "exactly one"),
        ({"key": "two words"}, "enrich.key", "spaces"),
        ({"key": SECRET, "provider": "imdb"}, "enrich.provider", "tmdb"),
        ({"key": SECRET, "rate_limit": 0}, "enrich.rate_limit", "at least"),
        ({"key": SECRET, "rate_limit": 2.5}, "enrich.rate_limit", "whole"),
        ({"key": SECRET, "order": "random"}, "enrich.order", "newest"),
        ({"key": SECRET, "min_confidence": 1.5}, "enrich.min_confidence", "0 to 1"),
        ({"key": SECRET, "base_url": "ftp://x"}, "enrich.base_url", "http"),
        ({"key": SECRET, "automatic": "yes"}, "enrich.automatic", "true or false"),
        ({"key": SECRET, "tv_types": ["film"]}, "enrich.tv_types", "movie_types"),
        ({"key": SECRET, "colour": 1}, "enrich.colour", "unknown key"),
    ],
)
def test_problems_name_file_key_and_problem(values: dict[str, Any], key: str, words: str) -> None:
    err = problem(enrich(**values))
    assert err.source == "/etc/importd/importd.toml"
    assert err.key == key and words in err.problem
    assert SECRET not in str(err)


def test_the_example_section_parses_and_stays_off() -> None:
    example = Path(__file__).parents[3] / "config" / "importd.example.toml"
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    assert "provider" not in data["enrich"]
    assert parse_config(data).enrich is None
    data["enrich"].update(provider="tmdb", key=SECRET)
    data["enrich"].pop("key_file")
    got = parse_config(data).enrich
    assert got is not None and got.rate_limit == 40 and got.automatic is False
