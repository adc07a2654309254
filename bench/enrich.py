"""Benchmarks for enrichment from a metadata provider (issue 19).

`bench_enrich_overhead()`: 1,000 films (200 with --quick) enriched by a real daemon against the
local TMDB-shaped server of the tests (`tests/provider_server.py`) with the rate limit set out of
the way: one search and one details request per film. The reference is the floor of any client:
a bare httpx client sending the same requests with the same concurrency to the same server. The
daemon's overhead per item is the difference, per film: reading the entity, scoring, the
response cache, one writer transaction, the gap report.

`bench_enrich_virtual_clock()`: the provider and the limiter as the daemon runs them (4 workers,
40 requests per 10 s, the limiter's guard included) for 1,000 films with answers that take no
time, on a virtual clock: the time the last request starts, beside the theoretical minimum
(2,000 requests at 40 per window: the last one starts in window 50, at 490 s). Target: within
5 %. Only the limiter waits on the clock, under its own lock, so virtual time is exact.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.core import DaemonRun, RootSpec, find_importd
from bench.report import INFO, Check, Target
from importd.enrich.cache import ResponseCache
from importd.enrich.limiter import RateLimiter
from importd.enrich.provider import Secret, Trace
from importd.enrich.tmdb import TmdbProvider
from importd.pipeline.enrichment import LIMITER_GUARD_S
from tests.provider_server import Catalog, provider_server

__all__ = ["bench_enrich_overhead", "bench_enrich_virtual_clock"]
WORKERS = 4


def _films(n: int) -> list[tuple[int, str, int]]:
    return [(10_000 + i, f"Bench Film {i:05d}", 1930 + i % 90) for i in range(n)]


class _EnrichDaemon(DaemonRun):
    def __init__(self, *args: Any, section: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.section = section

    def write_config(self) -> None:
        super().write_config()
        with open(self.config, "a", encoding="utf-8") as fh:
            fh.write('rules = "films-series"\n' + self.section)


async def _bare_client(base_url: str, films: list[tuple[int, str, int]]) -> float:
    """The same requests from a bare client: the floor."""
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url + "/", headers={"Authorization": "Bearer k"}) as client:
        send, recv = anyio.create_memory_object_stream[tuple[int, str, int]](WORKERS)

        async def worker(rows: Any) -> None:
            async with rows:
                async for ident, title, year in rows:
                    r = await client.get("search/movie", params={"query": title, "year": year})
                    json.loads(r.content)
                    r = await client.get(f"movie/{ident}")
                    json.loads(r.content)

        async with anyio.create_task_group() as tg:
            for _ in range(WORKERS):
                tg.start_soon(worker, recv.clone())
            recv.close()
            async with send:
                for film in films:
                    await send.send(film)
    return time.perf_counter() - start


def bench_enrich_overhead(work_dir: Path, quick: bool = False) -> dict[str, Any]:
    films = _films(200 if quick else 1000)
    cat = Catalog()
    root = work_dir / "lib"
    for ident, title, year in films:
        cat.movie(ident, title, year)
        folder = root / "Films" / f"{title} ({year})"
        folder.mkdir(parents=True)
        (folder / f"{title}.mkv").write_bytes(title.encode())
    with provider_server(cat) as server:
        section = (
            f'\n[enrich]\nprovider = "tmdb"\nbase_url = "{server.base_url}"\nkey = "bench-key"\n'
            f"rate_limit = 1000000\nrate_window_seconds = 1\nworkers = {WORKERS}\n"
        )
        with _EnrichDaemon(
            find_importd(), work_dir / "daemon", [RootSpec("lib", root)], 0.2, section=section
        ) as d:
            d.wait_ready()
            client = d.client()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if len(client.entities(entity_type="film")) >= len(films):
                    break
                time.sleep(0.5)
            start = time.perf_counter()
            reply = client.enrich(every=True)
            while reply["state"] in ("queued", "running"):
                time.sleep(0.05)
                reply = client.enrich_progress(reply["job"])
            daemon_s = time.perf_counter() - start
            requests = len(server.requests())
        reference_s = min(anyio.run(_bare_client, server.base_url, films) for _ in range(2))
    n = len(films)
    overhead_ms = (daemon_s - reference_s) / n * 1000
    checks = [
        Check(f"enrich {n:,} films (search + details each), no limit", round(daemon_s, 2), "s", INFO,
              round(reference_s, 2), f"bare httpx client, same {2 * n:,} requests, {WORKERS} at once"),
        Check("  daemon overhead per film", round(overhead_ms, 2), "ms", INFO, None, "",
              "reading, scoring, cache, one writer transaction, gap report"),
    ]  # fmt: skip
    return {
        "films": n,
        "daemon_s": round(daemon_s, 3),
        "reference_s": round(reference_s, 3),
        "overhead_ms_per_film": round(overhead_ms, 3),
        "requests": requests,
        "counts": reply["counts"],
        "state": reply["state"],
        "checks": checks,
    }


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.sleep(0)


def _instant_answers(films: dict[str, tuple[int, str, int]]) -> httpx.MockTransport:
    by_id = {ident: (ident, title, year) for ident, title, year in films.values()}

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/search/movie"):
            ident, title, year = films[request.url.params["query"]]
            results = [
                {"id": ident, "title": title, "original_title": title, "release_date": f"{year}-01-01"}
            ]
            return httpx.Response(200, json={"page": 1, "results": results})
        ident, title, year = by_id[int(path.rsplit("/", 1)[1])]
        return httpx.Response(200, json={"id": ident, "title": title, "release_date": f"{year}-01-01"})

    return httpx.MockTransport(answer)


async def _virtual_run(n: int, limit: int, window: float) -> tuple[float, int]:
    clock = _VirtualClock()
    limiter = RateLimiter(limit, window, guard=LIMITER_GUARD_S, clock=clock, sleep=clock.sleep)
    films = {title: (ident, title, year) for ident, title, year in _films(n)}
    provider = TmdbProvider(
        "http://provider.invalid/3",
        Secret("k"),
        limiter,
        ResponseCache(Path("/nonexistent"), ttl=0.0),
        sleep=clock.sleep,
        transport=_instant_answers(films),
    )
    starts: list[float] = []
    send, recv = anyio.create_memory_object_stream[tuple[int, str, int]](WORKERS)
    rng = random.Random(5)

    async def worker(rows: Any) -> None:
        async with rows:
            async for ident, title, year in rows:
                trace = Trace()
                found = await provider.search("movie", title, year, trace)
                assert isinstance(found, list) and found
                await provider.details("movie", ident, trace)
                starts.append(clock())
                await anyio.sleep(rng.random() * 0.0001)

    async with anyio.create_task_group() as tg:
        for _ in range(WORKERS):
            tg.start_soon(worker, recv.clone())
        recv.close()
        async with send:
            for film in films.values():
                await send.send(film)
    await provider.aclose()
    return clock.now, 2 * n


def bench_enrich_virtual_clock(quick: bool = False) -> dict[str, Any]:
    limit, window = 40, 10.0
    n = 1000
    wall = time.perf_counter()
    elapsed, requests = anyio.run(_virtual_run, n, limit, window)
    wall = time.perf_counter() - wall
    minimum = ((requests - 1) // limit) * window
    checks = [
        Check(f"enrich {n:,} films at {limit}/{window:g} s, virtual clock: last start",
              round(elapsed, 2), "s", Target("ratio_at_most", 1.05), minimum,
              f"theoretical minimum ({requests:,} requests)"),
    ]  # fmt: skip
    return {
        "films": n,
        "requests": requests,
        "virtual_s": round(elapsed, 3),
        "minimum_s": minimum,
        "real_s": round(wall, 3),
        "checks": checks,
    }
