"""Several servers, one catalog: two real daemons (hosts `alpha` and `beta`, each with a root
called `media`) on one real PostgreSQL catalog, registering the same characters at once."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ON_POSTGRESQL, Daemon, wait_for
from tests.pg import PgServer

pytestmark = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="several servers share a PostgreSQL catalog: runs in make test's PostgreSQL pass",
)

# Enough characters that the two daemons' mapping batches meet on the same entities.
CHARACTERS = 240
# Media off: the files are random bytes, and extracting them would only slow both daemons.
EXPECT = """
[media]
enabled = false
[expect.character]
attributes = ["age", "height"]
roles = ["source_image"]
scenes = ["intro", "dance"]
"""


def _tree(root: Path, scene: str, attribute: str, with_source: bool) -> None:
    """Each character's `scene` video with a sidecar giving `attribute`."""
    for i in range(CHARACTERS):
        folder = root / f"C{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{scene}.mp4").write_bytes(os.urandom(600))
        (folder / f"{scene}.json").write_text(json.dumps({attribute: i}), encoding="utf-8")
        if with_source:
            (folder / "source.jpg").write_bytes(os.urandom(300))


@pytest.fixture
def site(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[Daemon, Daemon]]:
    name = pg_server.create_database()
    url = pg_server.url(name)
    pair = []
    for host, scene, attribute in (("alpha", "intro", "age"), ("beta", "dance", "height")):
        root = tmp_path / host / "media"
        _tree(root, scene, attribute, with_source=host == "alpha")
        (root / "same.bin").write_bytes(b"one content on both servers" * 100)
        d = Daemon(tmp_path / f"d-{host}", {"media": root}, extra=EXPECT, catalog_url=url, host=host)
        d.write_config(f'\n[[roots]]\nname = "media"\npath = "{root}"\nrules = "characters"\n')
        pair.append(d)
    alpha, beta = pair
    try:
        # Both at once: migrations, entity creation and attribute updates race.
        alpha.start(wait=False)
        beta.start(wait=False)
        for d in pair:
            wait_for(lambda d=d: d.socket.exists() and d.client().status(), timeout=90, what="daemon socket")
        for d in pair:
            d.wait_idle(timeout=120)
        yield alpha, beta
    finally:
        for d in pair:
            d.kill()
        pg_server.drop_database(name)


def _json(d: Daemon, *args: str) -> Any:
    return d.ctl_json(*args)


def test_two_servers_share_one_catalog_without_losing_an_update(site: tuple[Daemon, Daemon]) -> None:
    alpha, beta = site
    roots = alpha.sql("SELECT host, name FROM roots ORDER BY host")
    assert [tuple(r) for r in roots] == [("alpha", "media"), ("beta", "media")]
    # One entity per character, holding what both servers' sidecars said: no lost update.
    rows = alpha.sql("SELECT key, attributes FROM entities WHERE type = 'character' ORDER BY key")
    assert len(rows) == CHARACTERS
    lost = [r[0] for r in rows if set(json.loads(r[1])) != {"age", "height"}]
    assert lost == [], f"{len(lost)} entities lost an update: {lost[:5]}"
    for d in site:
        log = d.log_text()
        assert "Traceback" not in log and "IntegrityError" not in log and "dropped " not in log, log[-3000:]

    # Each server's own view: its root, its files.
    mine = _json(alpha, "status")
    assert mine["host"] == "alpha" and [r["name"] for r in mine["roots"]] == ["media"]
    assert mine["files"]["present"] == CHARACTERS * 3 + 1
    theirs = _json(beta, "status")
    assert theirs["host"] == "beta" and theirs["files"]["present"] == CHARACTERS * 2 + 1

    # The site from either server: both daemons up, every root and file.
    whole = _json(beta, "status", "--site")["site"]
    assert [(h["name"], h["state"], h["this"]) for h in whole["hosts"]] == [
        ("alpha", "up", False),
        ("beta", "up", True),
    ]
    assert [(r["host"], r["name"]) for r in whole["roots"]] == [("alpha", "media"), ("beta", "media")]
    assert whole["files"]["present"] == CHARACTERS * 5 + 2
    assert whole["completeness"]["percent"] == 100.0
    text = beta.ctl("status", "--site", check=True).stdout.decode()
    assert "site: 2 server(s)" in text and "alpha" in text and "(this one)" in text

    # Gaps: alpha alone lacks the dance scenes beta holds; the heights beta's sidecars gave the
    # entities reach alpha's live report too (attributes are the entity's, site-wide). The site
    # lacks nothing.
    def alpha_lacks() -> set[tuple[str, str]]:
        report = _json(alpha, "gaps")
        assert report["completeness"]["percent"] < 100.0
        return {(m["kind"], str(m["name"])) for e in report["entities"] for m in e["missing"]}

    wait_for(lambda: alpha_lacks() == {("scene", "dance")}, timeout=30, what="beta's attributes on alpha")
    page = _json(alpha, "entity", "C000")
    assert sorted(f["path"] for f in page["files"]) == sorted(
        [str(alpha.roots["media"] / "C000" / n) for n in ("intro.json", "intro.mp4", "source.jpg")]
        + [f"beta:{beta.roots['media'] / 'C000' / n}" for n in ("dance.json", "dance.mp4")]
    )
    assert _json(alpha, "gaps") == _json(alpha, "gaps", "--recompute")
    assert _json(alpha, "gaps", "--site")["completeness"]["percent"] == 100.0
    assert _json(alpha, "gaps", "--site")["entities"] == []


def test_find_and_dupes_across_the_site(site: tuple[Daemon, Daemon]) -> None:
    alpha, beta = site
    dance = beta.roots["media"] / "C007" / "dance.mp4"
    found = _json(alpha, "find", "--site", str(dance))
    assert [(f["host"], f["root"], f["relpath"]) for f in found] == [("beta", "media", "C007/dance.mp4")]
    digest = found[0]["blake3"]
    # Without --site, alpha sees its own files only.
    res = alpha.ctl("find", digest)
    assert res.returncode != 0 and b"importctl find --site" in res.stderr
    assert [f["host"] for f in _json(alpha, "find", "--site", digest)] == ["beta"]

    local = _json(alpha, "dupes", "--kind", "exact")["groups"]
    assert local == []  # same.bin is once on each server
    groups = _json(alpha, "dupes", "--kind", "exact", "--site")["groups"]
    assert [sorted(m["host"] for m in g["members"]) for g in groups] == [["alpha", "beta"]]
    text = alpha.ctl("dupes", "--kind", "exact", "--site", check=True).stdout.decode()
    assert "alpha:" in text and "beta:" in text


def test_a_server_never_touches_another_servers_files(site: tuple[Daemon, Daemon]) -> None:
    alpha, beta = site
    beta_files = CHARACTERS * 2 + 1
    assert beta.stop() == 0
    # Beta's tree is gone while its daemon is down: only beta may say so, not alpha.
    shutil.rmtree(beta.roots["media"])
    assert _json(alpha, "status", "--site")["site"]["hosts"][1]["state"] == "stopped"
    alpha.ctl("scan", "--wait", check=True)
    alpha.stop()
    alpha.start()
    alpha.wait_idle()
    gone = alpha.sql(
        "SELECT count(*) FROM files JOIN roots ON roots.id = files.root_id"
        " WHERE roots.host = 'beta' AND files.status = 'present'"
    )
    assert gone[0][0] == beta_files
    assert alpha.sql("SELECT count(*) FROM runs WHERE host = 'beta' AND status = 'interrupted'")[0][0] == 0


def test_a_folder_move_does_not_rename_an_entity_another_server_still_holds(
    site: tuple[Daemon, Daemon],
) -> None:
    alpha, _ = site
    root = alpha.roots["media"]
    os.rename(root / "C001", root / "Renamed")
    wait_for(
        lambda: alpha.sql("SELECT count(*) FROM entities WHERE key = 'name:renamed'")[0][0] == 1,
        timeout=60,
        what="the moved files' own entity",
    )
    alpha.wait_idle()
    # C001 keeps its key: beta's files of it are where they were.
    assert alpha.sql("SELECT count(*) FROM entities WHERE key = 'name:c001'")[0][0] == 1
