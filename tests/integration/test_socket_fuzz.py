"""Socket fuzzing (issue 21): ten thousand malformed, truncated, deeply nested, out-of-range and
wrong-typed messages, multipart and empty frames, then a flood from 20 clients at once. Every
message gets a reply that is `invalid`, `busy` or an answer (never `internal`), the daemon never
crashes and logs no traceback, its RSS stays flat, and `status` keeps answering between bursts
(its latency printed, measured in the client)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from importctl.protocol import MAX_REQUEST_BYTES, METHOD_PARAMS
from tests.conftest import Daemon
from tests.integration.test_socket_door import READS, rss_kib, tracebacks

MESSAGES = 10_000
CLIENTS = 20
PER_CLIENT = 250
# An answer to a well-formed request may be an error of the request's own (no such entity, not
# allowed): what must never come back is `internal`, or nothing.
ANSWERED = {"ok", "invalid", "busy", "not_found", "denied"}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int, as_list: bool) -> str:
    return ("[" * depth + "]" * depth) if as_list else ('{"a":' * depth + "1" + "}" * depth)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A request-shaped object with something wrong (or nothing wrong) in it."""
    method = draw(st.one_of(st.sampled_from(READS), st.text(max_size=20), json_scalars))
    if isinstance(method, str) and method in METHOD_PARAMS:
        params: Any = {}
        for name, (_, required) in METHOD_PARAMS[method].items():
            if required or draw(st.booleans()):
                params[name] = draw(json_values)
    else:
        params = draw(json_values)
    body: dict[str, Any] = {"v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None])), "method": method}
    if draw(st.booleans()):
        body["id"] = draw(json_scalars)
    if draw(st.integers(0, 9)):
        body["params"] = params
    return json.dumps(body, allow_nan=True).encode()


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    kind = draw(
        st.sampled_from(["bytes", "json", "truncated", "envelope", "deep", "multipart", "empty", "huge-int"])
    )
    if kind == "bytes":
        return [draw(st.binary(max_size=200))]
    if kind == "json":
        return [json.dumps(draw(json_values)).encode()]
    if kind == "truncated":
        whole = draw(envelopes())
        return [whole[: draw(st.integers(0, max(0, len(whole) - 1)))]]
    if kind == "envelope":
        return [draw(envelopes())]
    if kind == "deep":
        depth = draw(st.integers(17, 5000))
        inner = _nested(depth, draw(st.booleans()))
        return [('{"v":1,"id":"d","method":"gaps","params":{"entity":' + inner + "}}").encode()]
    if kind == "multipart":
        return draw(st.lists(st.binary(max_size=40), min_size=2, max_size=4))
    if kind == "empty":
        return [b""]
    number = draw(st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]))
    return [f'{{"v":1,"id":"n","method":"run","params":{{"run_id":{number}}}}}'.encode()]


# One flooding client: a process of its own sending PER_CLIENT messages without waiting for a
# reply, then reading them all; prints its reply codes as JSON.
FLOOD_CLIENT = """
import json, sys, zmq
path, n, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pool = [b"", b"{", b'{"v":1,"id":"s","method":"status","params":{}}',
        b'{"v":1,"id":"x","method":"nope","params":{}}',
        b'{"v":1,"id":"g","method":"gaps","params":{"entity":' + b"[" * 40 + b"]" * 40 + b"}}",
        b'{"v":1,"id":"r","method":"run","params":{"run_id":18446744073709551616}}']
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.SNDHWM, 0); s.setsockopt(zmq.RCVHWM, 0)
s.connect("ipc://" + path)
for i in range(count):
    s.send(pool[(n + i) % len(pool)])
codes = {}
for _ in range(count):
    if not s.poll(60000):
        sys.exit("a reply missing after %d replies: %r" % (sum(codes.values()), codes))
    body = json.loads(s.recv_multipart()[-1])
    code = "ok" if body["ok"] else body["error"]["code"]
    codes[code] = codes.get(code, 0) + 1
print(json.dumps(codes))
"""


def _code(reply: list[bytes]) -> str:
    body = json.loads(reply[-1])
    return "ok" if body["ok"] else str(body["error"]["code"])


def _dealer(d: Daemon) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(f"ipc://{d.socket}")
    return s


def _status_latency(d: Daemon) -> float:
    started = time.perf_counter()
    assert d.client(timeout=10.0).status()["pid"]
    return time.perf_counter() - started


def test_ten_thousand_malformed_messages_and_a_flood_from_twenty_clients(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon().start()
    d.wait_idle()
    assert d.proc is not None
    pid = d.proc.pid
    before_tracebacks = tracebacks(d)
    for _ in range(20):  # the first requests warm the daemon's caches: RSS from here
        _status_latency(d)
    rss_before = rss_kib(pid)
    sock = _dealer(d)
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    sent = 0

    @settings(
        max_examples=MESSAGES,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages())
    def answered(frames: list[bytes]) -> None:
        nonlocal sent
        assert sum(map(len, frames)) <= MAX_REQUEST_BYTES
        sock.send_multipart(frames)
        assert sock.poll(10_000), f"no reply to {frames!r:.300}"
        code = _code(sock.recv_multipart())
        codes[code] += 1
        assert code in ANSWERED, (code, frames)
        sent += 1
        if sent % 500 == 0:  # a valid status between bursts
            latencies.append(_status_latency(d))

    answered()
    sock.close(0)
    assert sent >= MESSAGES, sent

    # A flood: 20 client processes at once (the in-flight limit is per process, as the kernel
    # names the caller), each sending its messages without waiting, then reading every reply;
    # meanwhile importctl, a process of its own, asks for status.
    flood = [
        subprocess.Popen(
            [sys.executable, "-c", FLOOD_CLIENT, str(d.socket), str(n), str(PER_CLIENT)],
            stdout=subprocess.PIPE,
        )
        for n in range(CLIENTS)
    ]
    during = []
    flood_codes: Counter[str] = Counter()
    try:
        for _ in range(3):
            started = time.perf_counter()
            res = d.ctl("status", "--json")
            during.append(time.perf_counter() - started)
            assert res.returncode == 0, res.stderr
        for proc in flood:
            out, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, out
            flood_codes.update(json.loads(out))
    finally:
        for proc in flood:  # a failure above leaves no flooding process behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sum(flood_codes.values()) == CLIENTS * PER_CLIENT and set(flood_codes) <= ANSWERED, flood_codes

    assert d.proc.poll() is None, "the daemon is still running"
    time.sleep(0.5)
    rss_after = rss_kib(pid)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    print(
        f"\n{sent} fuzzed messages: {dict(codes)}; flood of {CLIENTS}x{PER_CLIENT}: {dict(flood_codes)}\n"
        f"daemon RSS {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after; "
        f"status between bursts: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms ({len(latencies)} samples); importctl status during the flood "
        f"(a process of its own, start-up included): {', '.join(f'{t:.2f}s' for t in during)}"
    )
    assert codes["internal"] == 0 and flood_codes["internal"] == 0
    assert tracebacks(d) == before_tracebacks, d.log_text()[-3000:]
    # Flat: what a burst allocates is given back (allocator slack aside).
    assert rss_after - rss_before < 24 * 1024, (rss_before, rss_after)
