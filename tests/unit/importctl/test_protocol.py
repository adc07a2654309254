import json

import pytest

from importctl.protocol import (
    MAX_REQUEST_BYTES,
    METHOD_PARAMS,
    ErrorCode,
    Method,
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


@pytest.mark.parametrize(
    ("method", "params", "problem"),
    [
        (Method.RUN, {"run_id": 2**63}, "64-bit"),
        (Method.RUN, {"run_id": -(2**63) - 1}, "64-bit"),
        (Method.RUN, {"run_id": 2**31}, "32-bit"),  # ids: PostgreSQL's integer columns
        (Method.GAPS, {"run": -(2**31) - 1}, "32-bit"),
        (Method.DUPES, {"threshold": float("inf")}, "finite"),
        (Method.FIND, {"query": "a\x00b"}, "NUL"),
        (Method.FIND, {"query": "\ud800"}, "surrogate"),
        (Method.ENTITY, {"entity": "caf\udce9"}, "surrogate"),  # text, not a path: no escapes
        (Method.APPLY_LINKS, {"actions": [{"link\x00": "x"}], "who": "me"}, "NUL"),
        (
            Method.IMPORT_CSV,
            {"path": "/x", "type": "t", "map": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]},
            "nested",
        ),
    ],
)
def test_values_no_handler_could_use_are_invalid(
    method: Method, params: dict[str, object], problem: str
) -> None:
    with pytest.raises(ProtocolError) as err:
        validate_params(method, params, METHOD_PARAMS[method], "r1")
    assert err.value.code is ErrorCode.INVALID and problem in err.value.message
    assert err.value.request_id == "r1"


def test_edge_values_that_are_fine_pass() -> None:
    validate_params(Method.RUN, {"run_id": 2**31 - 1}, METHOD_PARAMS[Method.RUN], "r")
    validate_params(Method.ERRORS, {"limit": 2**63 - 1}, METHOD_PARAMS[Method.ERRORS], "r")
    validate_params(Method.ERRORS, {"limit": -(2**63)}, METHOD_PARAMS[Method.ERRORS], "r")
    # A path may hold bytes that are not UTF-8, as surrogate escapes.
    validate_params(Method.FIND, {"query": "/srv/caf\udce9.txt"}, METHOD_PARAMS[Method.FIND], "r")
    link = {"link": "/srv/l\udcff", "action": "repair", "candidate": "/srv/\udce9"}
    validate_params(
        Method.APPLY_LINKS, {"actions": [link], "who": "é"}, METHOD_PARAMS[Method.APPLY_LINKS], "r"
    )


def test_json_too_deep_to_parse_is_invalid() -> None:
    with pytest.raises(ProtocolError, match="nested too deep") as err:
        decode_request(b"[" * 100_000)
    assert err.value.code is ErrorCode.INVALID
