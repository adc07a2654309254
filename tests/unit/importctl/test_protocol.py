import json

import pytest

from importctl.protocol import (
    MAX_REQUEST_BYTES,
    METHOD_PARAMS,
    ErrorCode,
    ProtocolError,
    Reply,
    Request,
    decode_reply,
    decode_request,
    validate_params,
)


def test_request_round_trip_keeps_undecodable_path_bytes() -> None:
    path = b"/srv/caf\xe9\nname".decode("utf-8", "surrogateescape")
    req = Request("find", {"query": path})
    frame = req.encode()
    frame.decode("ascii")  # pure ASCII on the wire
    back = decode_request(frame)
    assert back.params["query"].encode("utf-8", "surrogateescape") == b"/srv/caf\xe9\nname"
    assert back.id == req.id


def test_reply_round_trip() -> None:
    ok = decode_reply(Reply("1", True, result={"a": 1}, daemon_version="9").encode())
    assert ok.ok and ok.result == {"a": 1} and ok.daemon_version == "9"
    err = decode_reply(Reply("1", False, error_code=ErrorCode.BUSY, error_message="m").encode())
    assert not err.ok and err.error_code is ErrorCode.BUSY and err.error_message == "m"
    weird = decode_reply(json.dumps({"ok": False, "error": {"code": "???"}}).encode())
    assert weird.error_code is ErrorCode.INTERNAL


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"nope",
        b"\xff",
        b"[]",
        b'{"v": 2, "id": "a", "method": "status"}',
        b'{"v": 1, "method": "status"}',
        b'{"v": 1, "id": "a", "method": 3}',
        b'{"v": 1, "id": "a", "method": "status", "params": []}',
    ],
)
def test_malformed_requests(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_request(frame)
    assert err.value.code is ErrorCode.INVALID


def test_oversized_request() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_request(b" " * (MAX_REQUEST_BYTES + 1))


def test_param_validation() -> None:
    spec = METHOD_PARAMS["find"]
    validate_params("find", {"query": "x"}, spec, "1")
    for bad in ({}, {"query": 1}, {"query": "x", "extra": 1}):
        with pytest.raises(ProtocolError):
            validate_params("find", bad, spec, "1")
    with pytest.raises(ProtocolError, match="must be int"):
        validate_params("errors", {"limit": True}, METHOD_PARAMS["errors"], "1")
