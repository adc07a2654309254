"""Who is on the other end of the control socket, as the kernel says.

On an ipc connection libzmq reads the peer's credentials with SO_PEERCRED when it accepts the
connection and hands them on with every message as the `Peer-Address` property,
``"<host>:<uid>:<gid>:<pid>"`` (libzmq's stream engine, when built with SO_PEERCRED, as the wheels
are). Those are the connecting process's: what a client claims about itself (`who`) is kept
beside them, never instead of them.
"""

from __future__ import annotations

import contextvars
import pwd
from dataclasses import dataclass

import zmq


@dataclass(frozen=True)
class Peer:
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None

    @classmethod
    def of(cls, frame: zmq.Frame) -> Peer:
        try:
            address = frame.get("Peer-Address")
        except zmq.ZMQError:
            return cls()
        parts = str(address).rsplit(":", 3)
        if len(parts) != 4:
            return cls()
        try:
            return cls(int(parts[1]), int(parts[2]), int(parts[3]))
        except ValueError:
            return cls()

    @property
    def known(self) -> bool:
        return self.uid is not None

    def user(self) -> str:
        if self.uid is None:
            return "?"
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def describe(self) -> str:
        """For the audit logs: ``uid=1000(alice) pid=4242``."""
        if not self.known:
            return "uid=? pid=? (the kernel did not say)"
        return f"uid={self.uid}({self.user()}) pid={self.pid}"

    def audit(self, claim: str) -> str:
        """Who asked, as a log records it: the kernel's word, then the client's own."""
        claim = claim[:200].strip()
        return self.describe() + (f" (claims: {claim})" if claim else "")


UNKNOWN = Peer()
_current: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("importd_api_peer", default=None)


def caller() -> Peer:
    """The peer of the request being handled (each request runs in a task of its own)."""
    return _current.get() or UNKNOWN


def set_caller(peer: Peer) -> None:
    _current.set(peer)
