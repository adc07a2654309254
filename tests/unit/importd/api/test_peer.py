"""What libzmq really gives of a caller on an ipc socket: the kernel's uid, gid and pid
(SO_PEERCRED) in each message's Peer-Address, read by `Peer.of`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import zmq

from importd.api.peer import Peer, caller, set_caller


def test_peer_address_carries_the_connecting_process_credentials(tmp_path: Path) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path / 'c.sock'}"
    router.bind(endpoint)
    code = (
        "import os, sys, zmq; s = zmq.Context().socket(zmq.DEALER); s.connect(sys.argv[1]); "
        "s.send(str(os.getpid()).encode()); s.poll(5000)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, endpoint])
    try:
        assert router.poll(10_000)
        frames = router.recv_multipart(copy=False)
        peer = Peer.of(frames[-1])
        # Another process: the pid is the child's (what it says of itself matches), not ours.
        assert peer == Peer(os.getuid(), os.getgid(), int(frames[-1].bytes))
        assert peer.pid == child.pid != os.getpid()
        router.send_multipart([frames[0].bytes, b"ok"])
    finally:
        child.wait(10)
        router.close(0)
        ctx.term()


def test_unknown_and_described() -> None:
    class NoProperty:
        def get(self, name: str) -> str:
            raise zmq.ZMQError(22)

    assert Peer.of(NoProperty()) == Peer()  # type: ignore[arg-type]
    assert not Peer().known and "did not say" in Peer().describe()
    assert Peer(0, 0, 42).describe() == "uid=0(root) pid=42"
    assert Peer(0, 0, 42).audit("anyone") == "uid=0(root) pid=42 (claims: anyone)"
    assert Peer(0, 0, 42).audit("") == "uid=0(root) pid=42"
    assert Peer(0, 0, 42).audit("x" * 500).endswith("x" * 200 + ")")
    assert Peer(4_000_000, 1, 2).user() == "4000000"


def test_caller_is_the_requests_own() -> None:
    assert caller() == Peer()
    set_caller(Peer(1, 2, 3))
    assert caller() == Peer(1, 2, 3)
