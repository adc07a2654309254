"""Live events on a ZeroMQ PUB socket beside the control socket (`importctl watch`, progress
bars, `gaps --follow`). Publishing never blocks the daemon: a slow subscriber loses messages
(PUB drops above its high-water mark) rather than holding anything up."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import zmq

from importctl.protocol import PROTOCOL_VERSION, Event, EventData, FileSample, Topic, endpoint_for, iso_utc
from importd.catalog.writer import FileChange
from importd.paths import wire

log = logging.getLogger("importd.api")
SAMPLE_PATHS = 20


class EventBus:
    def __init__(self) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self.path: Path | None = None
        self.seq = 0

    def bind(self, path: Path) -> None:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        if path.exists() or path.is_symlink():
            path.unlink()  # stale; the control socket's lock proves no daemon owns it
        sock.bind(endpoint_for(path))
        os.chmod(path, 0o660)
        self._sock = sock
        self.path = path

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """`topic` is a `Topic`; `data` its shape (`ScanReply`, `FilesEvent`, `GapsEvent`)."""
        if self._sock is None:
            return
        self.seq += 1
        body: Event = {
            "v": PROTOCOL_VERSION,
            "topic": topic,
            "seq": self.seq,
            "at": iso_utc(time.time()),
            "data": cast(EventData, data),
        }
        try:
            self._sock.send_multipart(
                [topic.encode(), json.dumps(body, ensure_ascii=True).encode()], flags=zmq.NOBLOCK
            )
        except zmq.ZMQError as exc:
            log.debug("event %s dropped: %s", topic, exc)

    def publish_changes(self, changes: Iterable[FileChange], root_names: Mapping[int, str]) -> None:
        """One summary per committed batch (a cold import commits 100,000 files: one event per
        file would cost more than the registration)."""
        if self._sock is None:
            return
        counts: dict[str, int] = {}
        sample: list[FileSample] = []
        for change in changes:
            counts[change.kind] = counts.get(change.kind, 0) + 1
            if len(sample) < SAMPLE_PATHS:
                sample.append(
                    {
                        "root": root_names.get(change.root_id, "?"),
                        "relpath": wire(change.relpath),
                        "kind": change.kind,
                        "blake3": change.blake3,
                        "duplicate": change.duplicate,
                    }
                )
        if counts:
            self.publish(Topic.FILES, {"counts": counts, "sample": sample})
