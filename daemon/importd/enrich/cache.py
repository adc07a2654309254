"""The provider's answers on disk, each for `ttl` seconds, so a run asks nothing another run (or
the same one, before a crash) already asked. One JSON file per request, named by a digest of
the request (the key is not part of it: it travels in a header), written to a temporary name
and renamed, so a crash leaves an answer whole or absent."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def request_key(path: str, params: Mapping[str, Any]) -> str:
    text = path + "?" + "&".join(f"{k}={params[k]}" for k in sorted(params))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class ResponseCache:
    def __init__(self, folder: Path, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.ttl = ttl
        self._clock = clock

    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        """The stored answer, or None when there is none, it is older than the TTL or unreadable."""
        if self.ttl <= 0:
            return None
        try:
            with open(self._file(key), encoding="utf-8") as fh:
                stored = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or not isinstance(stored.get("at"), int | float):
            return None
        if self._clock() - stored["at"] > self.ttl:
            return None
        return stored.get("body")

    def put(self, key: str, url: str, body: Any) -> None:
        if self.ttl <= 0:
            return
        target = self._file(key)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"at": self._clock(), "url": url, "body": body}, fh, ensure_ascii=True)
        os.replace(tmp, target)


__all__ = ["ResponseCache", "request_key"]
