"""`importctl report --html FILE`: the page the daemon sends is written whole (never half), the
summary says what it holds, and the client waits long enough for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from importctl.client import REPORT_TIMEOUT_S, Client
from importctl.protocol import Method
from tests.unit.importctl.test_cli import Run
from tests.unit.importctl.test_cli import run as run  # the fixture, under its name
from tests.unit.importctl.test_client import FakeDaemon, ok

PAGE = "<!doctype html><p>caf\xe9 \udcff</p>"
REPLY = {
    "html": PAGE,
    "bytes": len(PAGE.encode("utf-8", "surrogateescape")),
    "root": None,
    "generated": "2026-12-07T03:00:00.000Z",
    "seconds": 1.25,
    "sections": {"roots": {"shown": 2, "total": 2}, "dupes_exact": {"shown": 200, "total": 1434}},
}


def test_report_writes_the_page_and_says_what_it_holds(run: Callable[..., Run], tmp_path: Path) -> None:
    r = run({"report": REPLY})
    target = tmp_path / "out.html"
    code, out, _ = r("report", "--html", str(target), "--root", "photos", "--groups", "200")
    assert code == 0 and r.client.calls == [("report", ("photos", 200))]
    assert target.read_bytes() == PAGE.encode("utf-8", "surrogateescape")
    assert f"wrote {target}" in out and "1,234 more counted, not drawn" in out
    code, out, _ = r("report", "--html", str(target), "--json")
    summary = json.loads(out)
    assert summary["path"] == str(target) and summary["bytes"] == target.stat().st_size
    assert summary["sections"]["dupes_exact"] == {"shown": 200, "total": 1434}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]  # no partial file left


def test_a_page_that_cannot_be_written_is_one_line(run: Callable[..., Run], tmp_path: Path) -> None:
    code, _, err = run({"report": REPLY})("report", "--html", str(tmp_path / "no" / "such" / "dir.html"))
    assert code == 1 and "Could not open file" in err and err.count("\n") == 1
    code, _, err = run({"report": REPLY})("report")
    assert code == 2 and "--html" in err


def test_the_client_waits_for_the_report(tmp_path: Path) -> None:
    seen: list[float] = []
    with FakeDaemon(tmp_path / "control.sock", ok(REPLY)) as fake:
        client = Client(tmp_path / "control.sock", timeout=2)
        original = client.call_raw

        def spy(request: Any) -> Any:
            seen.append(client.timeout)
            return original(request)

        client.call_raw = spy  # type: ignore[method-assign]
        assert client.report() == REPLY
        assert seen == [REPORT_TIMEOUT_S] and client.timeout == 2
        assert fake.requests[0]["method"] == Method.REPORT
        assert fake.requests[0]["params"] == {"root": None, "groups": 200}
