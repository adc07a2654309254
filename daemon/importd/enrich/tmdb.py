"""TMDB over httpx: search films by title and year, series by name, then a record's details.

Authentication is TMDB's v4 "API Read Access Token" sent as `Authorization: Bearer …` (TMDB
accepts it on every v3 endpoint): the key never becomes part of a URL, so it cannot reach a log
line, an exception's text or a cache file name through one; every failure's text is still passed
through `redact` in case a server echoes it. Every try of every request waits for the shared rate
limiter; passing failures are retried (`importd.enrich.retry`); answers are cached on disk.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx

from importd.enrich import retry
from importd.enrich.cache import ResponseCache, request_key
from importd.enrich.limiter import RateLimiter
from importd.enrich.provider import (
    Candidate,
    Details,
    Kind,
    ProviderFailure,
    Secret,
    Trace,
    parse_details,
    parse_search,
)

log = logging.getLogger("importd.enrich")
# httpx logs each request at INFO; the daemon's debug level would print every one.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class TmdbProvider:
    name = "tmdb"

    def __init__(
        self,
        base_url: str,
        key: Secret,
        limiter: RateLimiter,
        cache: ResponseCache,
        *,
        timeout: float = 10.0,
        retry_base: float = 1.0,
        language: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key = key
        self._limiter = limiter
        self._cache = cache
        self._retry_base = retry_base
        self._language = language
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {key.reveal()}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def redact(self, text: str) -> str:
        secret = self._key.reveal()
        return text.replace(secret, "***") if secret else text

    async def search(
        self, kind: Kind, title: str, year: int | None, trace: Trace
    ) -> list[Candidate] | ProviderFailure:
        params: dict[str, Any] = {"query": title, "include_adult": "false"}
        if year is not None:
            params["year" if kind == "movie" else "first_air_date_year"] = year
        if self._language:
            params["language"] = self._language
        body = await self.get_json(f"search/{kind}", params, trace)
        if isinstance(body, ProviderFailure):
            return body
        found = parse_search(kind, body)
        if isinstance(found, list) and not found and year is not None:
            # A year one off (a festival release, a first air date in another country) finds
            # nothing under TMDB's year filter: ask once more without it, and let the score judge.
            params.pop("year" if kind == "movie" else "first_air_date_year")
            body = await self.get_json(f"search/{kind}", params, trace)
            if isinstance(body, ProviderFailure):
                return body
            found = parse_search(kind, body)
        return found

    async def details(self, kind: Kind, provider_id: int, trace: Trace) -> Details | ProviderFailure:
        params: dict[str, Any] = {"language": self._language} if self._language else {}
        body = await self.get_json(f"{kind}/{provider_id}", params, trace)
        if isinstance(body, ProviderFailure):
            return body
        return parse_details(kind, body)

    async def get_json(self, path: str, params: Mapping[str, Any], trace: Trace) -> Any | ProviderFailure:
        key = request_key(path, params)
        cached = await anyio.to_thread.run_sync(self._cache.get, key)
        if cached is not None:
            trace.cached += 1
            return cached
        failure = ProviderFailure("not asked")
        for attempt in range(1, retry.TRIES + 1):
            await self._limiter.acquire()
            trace.requests += 1
            outcome, wait = await self._once(path, params)
            if not isinstance(outcome, ProviderFailure):
                await anyio.to_thread.run_sync(self._cache.put, key, f"/{path}", outcome)
                return outcome
            failure = outcome
            if not outcome.retryable or attempt == retry.TRIES:
                break
            delay = retry.delay(attempt, wait, self._retry_base, random.random())
            if wait is not None:
                self._limiter.hold(delay)  # the provider asked every worker to wait
            trace.notes.append(
                f"{path}: {outcome.reason}; try {attempt + 1} of {retry.TRIES} in {delay:.1f}s"
            )
            await self._sleep(delay)
        if failure.retryable:
            return ProviderFailure(
                f"{path}: {failure.reason} after {retry.TRIES} tries", True, failure.status
            )
        return ProviderFailure(f"{path}: {failure.reason}", False, failure.status)

    async def _once(self, path: str, params: Mapping[str, Any]) -> tuple[Any | ProviderFailure, float | None]:
        try:
            response = await self._client.get(path, params=dict(params))
        except httpx.TimeoutException:
            return ProviderFailure("timed out", retryable=True), None
        except httpx.TransportError as exc:
            return ProviderFailure(
                self.redact(f"cannot reach the provider ({type(exc).__name__})"), True
            ), None
        status = response.status_code
        if status != 200:
            wait = retry.retry_after_seconds(response.headers.get("retry-after"))
            if status in (401, 403):
                reason = f"HTTP {status}: the provider refused the key (check [enrich] key_file)"
            else:
                reason = f"HTTP {status}"
            return ProviderFailure(reason, retry.retryable_status(status), status), wait
        try:
            return json.loads(response.content), None
        except ValueError:
            return ProviderFailure("the answer is not JSON", retryable=True, status=status), None


__all__ = ["TmdbProvider"]
