"""A local HTTP server that speaks TMDB's search and details shapes, for the enrichment tests and
the benchmark: `/3/search/movie`, `/3/search/tv`, `/3/movie/{id}`, `/3/tv/{id}`. It logs every
request with its arrival time (time.monotonic()) and its Authorization header, and can be told
to answer a request whose path and query contain a text with a script of failures: "429:<secs>"
(with Retry-After), "500", "timeout:<secs>" (answers after that long), "malformed" (not JSON).
Films that share a title and a year are several equally good candidates."""

from __future__ import annotations

import json
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() on arrival
    path: str  # with the query
    auth: str
    status: int


@dataclass
class Catalog:
    movies: dict[int, dict[str, Any]] = field(default_factory=dict)
    tv: dict[int, dict[str, Any]] = field(default_factory=dict)

    def movie(self, ident: int, title: str, year: int | None, **extra: Any) -> None:
        self.movies[ident] = {
            "id": ident,
            "title": title,
            "original_title": extra.pop("original_title", title),
            "release_date": f"{year}-05-04" if year else "",
            "overview": extra.pop("overview", f"The story of {title}."),
            "runtime": extra.pop("runtime", 101),
            "genres": [{"id": 18, "name": "Drama"}],
            "imdb_id": extra.pop("imdb_id", f"tt{ident:07d}"),
            "tagline": extra.pop("tagline", ""),
            **extra,
        }

    def show(self, ident: int, name: str, year: int | None) -> None:
        self.tv[ident] = {
            "id": ident,
            "name": name,
            "original_name": name,
            "first_air_date": f"{year}-09-01" if year else "",
            "overview": f"The series {name}.",
            "genres": [{"id": 35, "name": "Comedy"}],
        }


class ProviderServer:
    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or Catalog()
        self.log: list[Logged] = []
        self.scripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for
            # the client's delayed ACK (40 ms a request on a kept-alive connection).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/3"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, match: str, *modes: str) -> None:
        with self._lock:
            self.scripts[match] = list(modes)

    def requests(self) -> list[Logged]:
        with self._lock:
            return list(self.log)

    def _scripted(self, path: str) -> str | None:
        with self._lock:
            for match, modes in self.scripts.items():
                if match in path and modes:
                    return modes.pop(0)
        return None

    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        at = time.monotonic()
        mode = self._scripted(req.path)
        status, body, headers = 200, b"", {"Content-Type": "application/json"}
        if mode is not None and mode.startswith("timeout:"):
            time.sleep(float(mode.split(":", 1)[1]))
        if mode is not None and mode.startswith("429"):
            status, body = 429, b'{"status_code":25,"status_message":"over the limit"}'
            headers["Retry-After"] = mode.split(":", 1)[1] if ":" in mode else "1"
        elif mode == "500":
            status, body = 500, b'{"status_message":"internal error"}'
        elif mode == "malformed":
            body = b'{"results": [ {"id": 1, "title": '
        else:
            status, payload = self._route(req.path)
            body = json.dumps(payload).encode()
        with self._lock:
            self.log.append(Logged(at, req.path, req.headers.get("Authorization", ""), status))
        try:
            req.send_response(status)
            for k, v in headers.items():
                req.send_header(k, v)
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout it was told to have)

    def _route(self, raw: str) -> tuple[int, Any]:
        url = urlsplit(raw)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] != ["3"]:
            return 404, {"status_message": "not found"}
        parts = parts[1:]
        if parts[:1] == ["search"] and len(parts) == 2 and parts[1] in ("movie", "tv"):
            return 200, self._search(parts[1], q)
        if len(parts) == 2 and parts[0] in ("movie", "tv") and parts[1].isdigit():
            table = self.catalog.movies if parts[0] == "movie" else self.catalog.tv
            found = table.get(int(parts[1]))
            return (200, found) if found else (404, {"status_code": 34, "status_message": "not found"})
        return 404, {"status_message": "not found"}

    def _search(self, kind: str, q: dict[str, str]) -> dict[str, Any]:
        wanted = _fold(q.get("query", ""))
        year_key, title_key, date_key = (
            ("year", "title", "release_date")
            if kind == "movie"
            else ("first_air_date_year", "name", "first_air_date")
        )
        year = q.get(year_key)
        table = self.catalog.movies if kind == "movie" else self.catalog.tv
        results = [
            {k: v for k, v in item.items() if k not in ("runtime", "genres", "imdb_id", "tagline")}
            for item in table.values()
            if wanted
            and any(wanted in _fold(item[k]) for k in (title_key, "original_" + title_key))
            and (not year or item[date_key].startswith(year))
        ]
        return {"page": 1, "results": results, "total_pages": 1, "total_results": len(results)}


@contextmanager
def provider_server(catalog: Catalog | None = None) -> Iterator[ProviderServer]:
    server = ProviderServer(catalog).start()
    try:
        yield server
    finally:
        server.close()


def max_in_window(times: list[float], window: float, eps: float = 1e-9) -> int:
    """The most requests that arrived within any half-open window [t, t + window) (`eps`: a
    start exactly one window after another is outside it, float rounding aside)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window + eps:
            j += 1
        best = max(best, i - j + 1)
    return best
