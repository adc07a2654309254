"""`enrich`, `pending`, `validate`, `unapply` over a scripted client: usage errors exit 2, a
failed run exits 1, `--json` prints the reply as it came, text names the next command."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from importctl import cli
from importctl.client import DaemonError
from importctl.protocol import ErrorCode

COUNTS = dict.fromkeys(
    ("considered", "unchanged", "matched", "pending", "none", "skipped", "conflicts", "requests", "cached"), 0
)


def job(state: str, **over: Any) -> dict[str, Any]:
    reply = {
        "job": "j1", "run_id": 9, "state": state, "dry_run": False, "trigger": "manual", "selection": "all",
        "counts": {**COUNTS, "considered": 2, "matched": 1, "pending": 1, "requests": 3},
        "items": [
            {"entity": "Amélie (2001)", "type": "film", "outcome": "matched", "provider_id": 194,
             "confidence": 1.0, "applied": ["plot"], "reason": ""},
            {"entity": "The Twins (1990)", "type": "film", "outcome": "pending", "provider_id": None,
             "confidence": 1.0, "applied": [], "reason": "2 candidates score alike (1.000)"},
        ],
        "message": "", "started": None, "finished": None,
    }  # fmt: skip
    reply.update(over)
    return reply


class Fake:
    def __init__(self, **replies: Any) -> None:
        self.replies = replies
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.daemon_version = None

    def __getattr__(self, name: str) -> Any:
        if name not in self.replies:
            raise AttributeError(name)

        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, args, kw))
            reply = self.replies[name]
            if isinstance(reply, list) and reply and isinstance(reply[0], dict) and "job" in reply[0]:
                return reply.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return call


def run(monkeypatch: pytest.MonkeyPatch, fake: Fake, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "Client", lambda socket, timeout: fake)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    with CliRunner().isolation() as (out, err, _):
        code = cli.main(list(args))
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_enrich_waits_for_the_run_and_names_what_next(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Fake(enrich=job("queued"), enrich_progress=[job("running"), job("completed")])
    code, out, _ = run(monkeypatch, fake, "enrich", "--all")
    assert code == 0
    assert "matched  Amélie (2001) #194 1.000: plot" in out
    assert "importctl pending" in out and "importctl unapply --run 9" in out
    assert fake.calls[0] == (
        "enrich",
        (),
        {"entity": None, "entity_type": None, "every": True, "dry_run": False},
    )


def test_enrich_json_and_a_failed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = job("failed", message="tmdb: HTTP 401: the provider refused the key")
    code, out, _ = run(monkeypatch, Fake(enrich=failed), "enrich", "--type", "film", "--json")
    assert code == 1 and json.loads(out) == failed


def test_enrich_needs_exactly_one_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for args in ((), ("--all", "--type", "film")):
        code, _, err = run(monkeypatch, Fake(), "enrich", *args)
        assert code == 2 and "--entity NAME, --type T or --all" in err


def test_pending_lists_numbered_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    candidate = {"n": 1, "provider_id": 301, "title": "The Twins", "original_title": None, "year": 1990,
                 "confidence": 1.0, "overview": ""}  # fmt: skip
    rows = [
        {"id": 3, "type": "film", "name": "The Twins (1990)", "kind": "movie", "reason": "alike",
         "since": None, "candidates": [candidate]},
    ]  # fmt: skip
    code, out, _ = run(monkeypatch, Fake(pending=rows), "pending")
    assert code == 0 and " 1. The Twins (1990)  #301  1.000" in out
    code, out, _ = run(monkeypatch, Fake(pending=[]), "pending")
    assert "nothing pending" in out


def test_validate_and_unapply(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = {
        "entity": "The Twins (1990)",
        "state": "matched",
        "provider_id": 302,
        "applied": ["plot"],
        "conflicts": 0,
    }
    fake = Fake(validate=reply)
    code, out, _ = run(monkeypatch, fake, "validate", "The Twins (1990)", "--pick", "2")
    assert code == 0 and "matched #302: applied plot" in out
    assert fake.calls[0] == (
        "validate",
        ("The Twins (1990)",),
        {"pick": 2, "provider_id": None, "none": False},
    )
    code, _, err = run(monkeypatch, Fake(), "validate", "X", "--pick", "1", "--none")
    assert code == 2 and "one of --pick N" in err
    undone = {"restored": 1, "left": 0, "conflicts_withdrawn": 1,
              "values": [{"entity": "A", "attribute": "plot", "value": None, "restored": True,
                          "why": ""}]}  # fmt: skip
    code, out, _ = run(monkeypatch, Fake(unapply=undone), "unapply", "--run", "9")
    assert code == 0 and "1 value(s) restored, 0 left, 1 conflict(s) withdrawn" in out
    code, _, err = run(monkeypatch, Fake(), "unapply")
    assert code == 2


def test_enrichment_off_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    off = DaemonError(ErrorCode.INVALID, "enrichment is off: configure a provider and its key in [enrich]")
    code, out, err = run(monkeypatch, Fake(enrich=off), "enrich", "--all")
    assert code == 1 and out == "" and err.count("\n") == 1 and "[enrich]" in err
