"""Handlers for `export` and `backup`: streams the client pulls a piece at a time.

Why a stream over the socket rather than the daemon writing the operator's file: under the
shipped unit the daemon runs as its own user on a read-only file system (`ProtectSystem=strict`),
so it could write only into its own directories. The client writes FILE as the operator, wherever
the operator may. Each `stream_next` answers with about a MiB; nothing is produced ahead of the
client (a dump is read from the catalog as it is pulled), so the daemon's memory does not grow
with the catalog. A stream the client stops pulling is closed after `STREAM_IDLE_S`, which ends
its read transaction (and removes a backup's staged copy).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread

from importctl.protocol import (
    EXPORT_FORMATS,
    STREAM_IDLE_S,
    ErrorCode,
    StreamChunkReply,
    StreamProgress,
    StreamReply,
)
from importd.api.server import ApiError, Params
from importd.catalog.backup import OnlineBackup
from importd.catalog.dump import DumpError, DumpSource, engine_lines, sqlite_lines
from importd.catalog.engine import sqlite_file
from importd.core import Core

CHUNK_CHARS = 1 << 20
CHUNK_BYTES = 3 << 18  # 768 KiB: 1 MiB in base64
MAX_STREAMS = 4


class _Stream:
    kind = ""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = anyio.Lock()
        self.last_used = time.monotonic()

    async def next(self) -> StreamChunkReply:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _ExportStream(_Stream):
    """The dump's lines, pulled from a SQLite reader in a worker thread, or from the async engine."""

    kind = "export"

    def __init__(self, token: str, core: Core, source: DumpSource) -> None:
        super().__init__(token)
        self.lines = 0
        self.summary: dict[str, Any] | None = None
        db_file = sqlite_file(core.engine)
        self._sync: Iterator[str] | None = sqlite_lines(db_file, source) if db_file else None
        self._async: AsyncIterator[str] | None = (
            None if db_file else engine_lines(core.engine, source).__aiter__()
        )

    async def next(self) -> StreamChunkReply:
        if self._sync is not None:
            lines = await anyio.to_thread.run_sync(_take, self._sync, CHUNK_CHARS)
        else:
            lines = await self._take_async()
        done = not lines or lines[-1].startswith('{"end":')
        self.lines += len(lines)
        reply: StreamChunkReply = {
            "stream": self.token,
            "data": "".join(ln + "\n" for ln in lines),
            "encoding": "text",
            "done": done,
            "progress": {"done": self.lines, "total": None, "unit": "lines"},
        }
        if done:
            reply["summary"] = {"lines": self.lines}
        return reply

    async def _take_async(self) -> list[str]:
        assert self._async is not None
        taken: list[str] = []
        size = 0
        async for line in self._async:
            taken.append(line)
            size += len(line) + 1
            if size >= CHUNK_CHARS:
                break
        return taken

    async def close(self) -> None:
        if self._sync is not None:
            gen, self._sync = self._sync, None
            close = getattr(gen, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)
        if self._async is not None:
            agen, self._async = self._async, None
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()


def _take(lines: Iterator[str], limit: int) -> list[str]:
    taken: list[str] = []
    size = 0
    for line in lines:
        taken.append(line)
        size += len(line) + 1
        if size >= limit:
            break
    return taken


class _BackupStream(_Stream):
    """SQLite's online backup into a staged file beside the catalog, then that file's bytes."""

    kind = "backup"

    def __init__(self, token: str, db_file: str) -> None:
        super().__init__(token)
        self.staged = os.path.join(os.path.dirname(db_file) or ".", f".backup-{token}.db")
        self.backup = OnlineBackup(db_file, self.staged)
        self._fh: Any = None
        self._sent = 0

    async def next(self) -> StreamChunkReply:
        backup = self.backup
        if not backup.done:
            await anyio.to_thread.run_sync(backup.wait, 1.0)
        copied, total = backup.progress()
        if not backup.done:
            return self._reply("", False, {"done": copied, "total": total or None, "unit": "pages"})
        if backup.error is not None or backup.figures is None:
            raise ApiError(ErrorCode.INTERNAL, f"the backup failed: {backup.error}")
        if self._fh is None:
            self._fh = open(self.staged, "rb")  # noqa: SIM115  (closed by close())
        data = await anyio.to_thread.run_sync(self._fh.read, CHUNK_BYTES)
        self._sent += len(data)
        figures = backup.figures
        done = self._sent >= figures.bytes
        progress: StreamProgress = {"done": figures.pages, "total": figures.pages, "unit": "pages"}
        reply = self._reply(base64.b64encode(data).decode("ascii"), done, progress)
        if done:
            reply["summary"] = {
                "pages": figures.pages,
                "page_size": figures.page_size,
                "bytes": figures.bytes,
                "steps": figures.steps,
                "seconds": round(figures.seconds, 3),
            }
        return reply

    def _reply(self, data: str, done: bool, progress: StreamProgress) -> StreamChunkReply:
        return {"stream": self.token, "data": data, "encoding": "base64", "done": done, "progress": progress}

    async def close(self) -> None:
        self.backup.cancel()
        await anyio.to_thread.run_sync(self.backup.wait, 30.0)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staged)


class _Streams:
    """The open streams of one daemon; an idle one is closed by a timer on the event loop."""

    def __init__(self) -> None:
        self.open: dict[str, _Stream] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, stream: _Stream) -> None:
        self.open[stream.token] = stream
        self._arm(stream)

    def _arm(self, stream: _Stream) -> None:
        asyncio.get_running_loop().call_later(STREAM_IDLE_S + 1, self._expire, stream.token)

    def _expire(self, token: str) -> None:
        stream = self.open.get(token)
        if stream is None:
            return
        if stream.lock.locked() or time.monotonic() - stream.last_used < STREAM_IDLE_S:
            self._arm(stream)
            return
        task = asyncio.get_running_loop().create_task(self.close(token))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, token: str) -> None:
        stream = self.open.pop(token, None)
        if stream is not None:
            await stream.close()


_STREAMS: weakref.WeakKeyDictionary[Core, _Streams] = weakref.WeakKeyDictionary()


def _streams(core: Core) -> _Streams:
    found = _STREAMS.get(core)
    if found is None:
        found = _STREAMS[core] = _Streams()
    return found


def _token() -> str:
    return secrets.token_hex(8)


def _check_room(streams: _Streams) -> None:
    if len(streams.open) >= MAX_STREAMS:
        raise ApiError(
            ErrorCode.BUSY,
            f"{MAX_STREAMS} exports or backups are already running; retry when one has ended",
        )


async def export(core: Core, params: Params) -> StreamReply:
    fmt = params.get("format") or "jsonl"
    if fmt not in EXPORT_FORMATS:
        raise ApiError(
            ErrorCode.INVALID, f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})"
        )
    streams = _streams(core)
    _check_room(streams)
    source = DumpSource(version=core.version, created=time.time(), ledger=core.maintenance.trash.ledger)
    stream = _ExportStream(_token(), core, source)
    streams.add(stream)
    return {"stream": stream.token, "kind": stream.kind, "format": fmt}


async def backup(core: Core, params: Params) -> StreamReply:
    db_file = sqlite_file(core.engine)
    if db_file is None:
        raise ApiError(
            ErrorCode.INVALID,
            "the catalog is not a SQLite file: back a PostgreSQL catalog up with pg_dump "
            "(the README's 'Export, backup and restore' gives the line), or use `importctl export`",
        )
    streams = _streams(core)
    _check_room(streams)
    _remove_stale_copies(db_file, streams)
    stream = _BackupStream(_token(), db_file)
    try:
        stream.backup.start()
    except RuntimeError as exc:  # no thread could be started
        raise ApiError(ErrorCode.INTERNAL, f"the backup could not start: {exc}") from None
    streams.add(stream)
    return {"stream": stream.token, "kind": stream.kind, "format": "sqlite"}


def _remove_stale_copies(db_file: str, streams: _Streams) -> None:
    """Staged copies a stopped daemon left (a backup it was streaming when it stopped)."""
    live = {s.staged for s in streams.open.values() if isinstance(s, _BackupStream)}
    folder = os.path.dirname(db_file) or "."
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".backup-") and name.endswith(".db") and path not in live:
            with contextlib.suppress(OSError):
                os.unlink(path)


async def stream_next(core: Core, params: Params) -> StreamChunkReply:
    streams = _streams(core)
    token = params["stream"]
    stream = streams.open.get(token)
    if stream is None:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"no stream {token!r}: it ended, or was closed after {STREAM_IDLE_S:g} s without a pull",
        )
    if params.get("cancel"):
        await streams.close(token)
        return {
            "stream": token,
            "data": "",
            "encoding": "text",
            "done": True,
            "progress": {"done": 0, "total": None, "unit": "lines"},
            "summary": {"cancelled": True},
        }
    if stream.lock.locked():
        raise ApiError(ErrorCode.BUSY, "this stream is answering another pull; pull one piece at a time")
    async with stream.lock:
        stream.last_used = time.monotonic()
        try:
            reply = await stream.next()
        except DumpError as exc:
            await _close_after_error(streams, token)
            raise ApiError(ErrorCode.INTERNAL, f"the export failed: {exc}") from None
        except ApiError:
            await _close_after_error(streams, token)
            raise
        except Exception:
            await _close_after_error(streams, token)
            raise
        stream.last_used = time.monotonic()
    if reply["done"]:
        await streams.close(token)
    return reply


async def _close_after_error(streams: _Streams, token: str) -> None:
    with contextlib.suppress(Exception):
        await streams.close(token)
