"""The ZeroMQ ROUTER loop. It knows no method by name: it decodes, validates against the
protocol's parameter table, looks the method up in the table it is given (`api/table.py`), calls
the handler with the core and the params, and replies. Every bad message gets an error reply and
the loop keeps serving."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import zmq
import zmq.asyncio

from importctl.protocol import (
    MAX_REQUEST_BYTES,
    METHOD_PARAMS,
    ErrorCode,
    ProtocolError,
    Reply,
    decode_request,
    endpoint_for,
    validate_params,
)
from importd.api.access import WriteAccess
from importd.api.peer import Peer, set_caller
from importd.catalog.failures import failure_text

log = logging.getLogger("importd.api")

# A request's params, already checked against the protocol's METHOD_PARAMS.
Params = dict[str, Any]
CoreT = TypeVar("CoreT")
# Requests one client (a process, by the kernel's credentials) may have in flight; more get
# `busy`. Per client, so one script flooding the socket cannot lock `importctl status` out.
MAX_IN_FLIGHT_PER_CLIENT = 64
# All clients together: a backstop on memory, far above what people and their scripts reach.
MAX_IN_FLIGHT = 1024
# Past that backstop a client with fewer than this in flight is still served, so twenty scripts
# flooding at once (20 x 64 > 1,024) cannot lock `importctl status` out either; the total stays
# bounded by MAX_IN_FLIGHT + RESERVED_PER_CLIENT x (clients).
RESERVED_PER_CLIENT = 2
# An error message is for a person: a 1 MB query is not echoed back whole.
MAX_ERROR_MESSAGE = 500


class ApiError(Exception):
    """Raised by a handler to answer with an error code (the message is shown to the operator)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AlreadyRunning(Exception):
    pass


class ControlSocket:
    """Binds the ipc socket safely: a lock file stops a second daemon from silently taking the
    endpoint over (libzmq lets a second bind win), and the socket file gets mode 0660 (libzmq
    follows the umask)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock_fd: int | None = None
        self.ctx = zmq.asyncio.Context()
        self.sock: zmq.asyncio.Socket | None = None

    def bind(self) -> zmq.asyncio.Socket:
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(
                f"another importd (pid {holder or '?'}) is serving {self.path}; stop it first "
                "(systemctl stop importd) or use another control socket"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()  # stale: its owner is gone, since we hold the lock
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # libzmq drops a connection whose frame announces more, before reading it, so an
        # oversized request costs no memory (importctl refuses to send one in the first place).
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        sock.bind(endpoint_for(self.path))
        os.chmod(self.path, 0o660)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.ctx.term()


def _short(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE:
        return message
    return f"{message[:MAX_ERROR_MESSAGE]}… ({len(message) - MAX_ERROR_MESSAGE} more characters)"


async def serve(
    sock: zmq.asyncio.Socket,
    table: Mapping[str, Callable[[CoreT, Params], Awaitable[object]]],
    core: CoreT,
    version: str,
    access: WriteAccess | None = None,
) -> None:
    in_flight: dict[object, int] = {}
    total = 0

    async def reply(envelope: list[bytes], body: Reply) -> None:
        try:
            await sock.send_multipart([*envelope, body.encode()])
        except zmq.ZMQError as exc:
            log.debug("reply not sent: %s", exc)

    def failed(request_id: str | None, code: ErrorCode, message: str) -> Reply:
        return Reply(
            request_id, False, error_code=code, error_message=_short(message), daemon_version=version
        )

    async def handle(envelope: list[bytes], frame: bytes, peer: Peer, client: object) -> None:
        nonlocal total
        request_id: str | None = None
        set_caller(peer)  # this task's own context: handlers ask `caller()`
        try:
            request = decode_request(frame)
            request_id = request.id
            handler = table.get(request.method)
            spec = METHOD_PARAMS.get(request.method)
            if handler is None or spec is None:
                raise ProtocolError(ErrorCode.INVALID, f"unknown method {request.method!r}", request_id)
            validate_params(request.method, request.params, spec, request.id)
            denial = access.denial(request.method, peer) if access is not None else None
            if denial is not None:
                log.warning("refused %s to %s: %s", request.method, peer.describe(), denial)
                raise ApiError(ErrorCode.DENIED, denial)
            result = await handler(core, request.params)
            await reply(envelope, Reply(request_id, True, result=result, daemon_version=version))
        except ProtocolError as exc:
            await reply(envelope, failed(exc.request_id or request_id, exc.code, exc.message))
        except ApiError as exc:
            await reply(envelope, failed(request_id, exc.code, exc.message))
        except Exception as exc:
            log.exception("handler failed")
            await reply(envelope, failed(request_id, ErrorCode.INTERNAL, failure_text(exc)))
        finally:
            total -= 1
            left = in_flight[client] - 1
            if left:
                in_flight[client] = left
            else:
                del in_flight[client]

    async with anyio.create_task_group() as tg:
        while True:
            try:
                frames = await sock.recv_multipart(copy=False)
            except zmq.ZMQError as exc:
                log.warning("control socket receive failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            if len(frames) < 2:
                continue  # no routing identity: nothing to reply to
            peer = Peer.of(frames[-1])
            # DEALER clients send [payload]; REQ clients add an empty delimiter frame.
            envelope = [frames[0].bytes]
            body = [f.bytes for f in frames[1:]]
            if body and body[0] == b"" and len(body) > 1:
                envelope.append(b"")
                body = body[1:]
            if len(body) != 1:
                await reply(envelope, failed(None, ErrorCode.INVALID, "a request is exactly one frame"))
                continue
            # A process, whatever sockets it opens (importctl opens one per call); the routing
            # identity where the kernel's word is missing.
            client: object = (peer.uid, peer.pid) if peer.known else envelope[0]
            held = in_flight.get(client, 0)
            if held >= MAX_IN_FLIGHT_PER_CLIENT or (total >= MAX_IN_FLIGHT and held >= RESERVED_PER_CLIENT):
                await reply(
                    envelope, failed(None, ErrorCode.BUSY, "too many requests in flight; retry shortly")
                )
                continue
            in_flight[client] = in_flight.get(client, 0) + 1
            total += 1
            tg.start_soon(handle, envelope, body[0], peer, client)
