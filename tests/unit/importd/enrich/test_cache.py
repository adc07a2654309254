from __future__ import annotations

from pathlib import Path

from importd.enrich.cache import ResponseCache, request_key


def test_an_answer_is_kept_for_its_ttl(tmp_path: Path) -> None:
    now = [1000.0]
    cache = ResponseCache(tmp_path, ttl=60.0, clock=lambda: now[0])
    key = request_key("search/movie", {"query": "Amélie", "year": 2001})
    assert cache.get(key) is None
    cache.put(key, "/search/movie", {"results": []})
    assert cache.get(key) == {"results": []}
    now[0] += 61
    assert cache.get(key) is None


def test_the_key_does_not_depend_on_parameter_order() -> None:
    assert request_key("p", {"a": 1, "b": 2}) == request_key("p", {"b": 2, "a": 1})
    assert request_key("p", {"a": 1}) != request_key("p", {"a": 2})


def test_a_broken_file_is_no_answer(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, ttl=60.0)
    key = request_key("x", {})
    cache.put(key, "/x", [1])
    (next(tmp_path.rglob("*.json"))).write_text("{not json")
    assert cache.get(key) is None


def test_a_ttl_of_zero_turns_it_off(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, ttl=0.0)
    cache.put("k" * 64, "/x", 1)
    assert cache.get("k" * 64) is None and not list(tmp_path.iterdir())
