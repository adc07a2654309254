"""The TMDB provider over httpx with a scripted transport and a virtual clock: the key goes in a
header only, passing failures are tried 3 times (Retry-After + 0.5 s, every worker held), final
ones are not, answers are cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

from importd.enrich.cache import ResponseCache
from importd.enrich.limiter import RateLimiter
from importd.enrich.provider import Candidate, ProviderFailure, Secret, Trace
from importd.enrich.tmdb import TmdbProvider

KEY = "k-1234567890abcdef"
FOUND = {
    "results": [{"id": 194, "title": "Amélie", "original_title": "Amélie", "release_date": "2001-04-25"}]
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def provider(
    tmp_path: Path, answers: list[httpx.Response | Exception], seen: list[httpx.Request]
) -> tuple[TmdbProvider, Clock]:
    clock = Clock()

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        got = answers.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    limiter = RateLimiter(40, 10.0, clock=clock, sleep=clock.sleep)
    made = TmdbProvider(
        "http://tmdb.test/3",
        Secret(KEY),
        limiter,
        ResponseCache(tmp_path, 3600.0),
        retry_base=1.0,
        sleep=clock.sleep,
        transport=httpx.MockTransport(answer),
    )
    return made, clock


def search(p: TmdbProvider, trace: Trace) -> Any:
    async def go() -> Any:
        try:
            return await p.search("movie", "Amélie", 2001, trace)
        finally:
            await p.aclose()

    return anyio.run(go)


def test_the_key_is_a_bearer_header_and_answers_are_cached(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    p, _ = provider(tmp_path, [httpx.Response(200, json=FOUND)], seen)
    trace = Trace()
    assert search(p, trace) == [Candidate(194, "movie", "Amélie", None, 2001, "")]
    (request,) = seen
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(request.url) and request.url.path == "/3/search/movie"
    assert request.url.params["query"] == "Amélie" and request.url.params["year"] == "2001"
    again, _ = provider(tmp_path, [], seen)
    trace = Trace()
    assert search(again, trace)[0].provider_id == 194
    assert (trace.requests, trace.cached) == (0, 1)
    for cached in tmp_path.rglob("*.json"):
        assert KEY not in cached.read_text()


def test_429_honours_retry_after_and_500_backs_off(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    answers: list[Any] = [
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(503),
        httpx.Response(200, json=FOUND),
    ]
    p, clock = provider(tmp_path, answers, seen)
    trace = Trace()
    assert isinstance(search(p, trace), list)
    assert trace.requests == 3 and len(trace.notes) == 2
    assert "HTTP 429" in trace.notes[0] and "HTTP 503" in trace.notes[1]
    assert clock.slept[0] == 3.5  # Retry-After + 0.5
    assert 2.0 <= clock.slept[-1] <= 4.0  # the second back-off: 2 s times 1 to 2


def test_three_failures_then_a_failure_value_and_final_ones_at_once(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    p, _ = provider(tmp_path, [httpx.Response(500)] * 3, seen)
    trace = Trace()
    failure = search(p, trace)
    assert isinstance(failure, ProviderFailure) and failure.retryable
    assert "HTTP 500 after 3 tries" in failure.reason and trace.requests == 3
    p, _ = provider(tmp_path, [httpx.Response(401, text=f"bad key {KEY}")], seen)
    failure = search(p, Trace())
    assert isinstance(failure, ProviderFailure) and not failure.retryable and failure.status == 401
    assert KEY not in failure.reason


def test_timeouts_and_garbage_are_passing(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    answers: list[Any] = [
        httpx.ReadTimeout("slow"),
        httpx.Response(200, content=b"{not json"),
        httpx.ConnectError(f"refused for {KEY}"),
    ]
    p, _ = provider(tmp_path, answers, seen)
    trace = Trace()
    failure = search(p, trace)
    assert isinstance(failure, ProviderFailure)
    assert ["timed out" in trace.notes[0], "not JSON" in trace.notes[1]] == [True, True]
    assert "cannot reach" in failure.reason and KEY not in failure.reason


def test_details(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    body = {"id": 1399, "name": "Kaamelott", "first_air_date": "2005-01-03", "overview": "Arthur."}
    p, _ = provider(tmp_path, [httpx.Response(200, json=body)], seen)

    async def go(call: Callable[[], Any]) -> Any:
        try:
            return await call()
        finally:
            await p.aclose()

    details = anyio.run(go, lambda: p.details("tv", 1399, Trace()))
    assert seen[0].url.path == "/3/tv/1399"
    assert details.values == {"tmdb_id": 1399, "title": "Kaamelott", "year": 2005, "premiered": "2005-01-03",
                              "plot": "Arthur."}  # fmt: skip
