"""The report's own reads: file and media facts of the paths it draws, each root's last
reconcile, and the entities a root holds."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from importd.catalog import media
from importd.catalog import report as catalog_report
from importd.catalog.runs import finish_run, start_run
from importd.catalog.tables import entities, entity_links
from importd.media.failure import ExtractionFailure
from importd.media.image import ImageFacts
from importd.media.versions import WorkKey
from tests.unit.importd.catalog.conftest import register

H1, H2 = "1" * 64, "2" * 64


def test_file_and_media_facts_of_the_drawn_paths(catalog: Connection) -> None:
    register(catalog, {b"a.jpg": H1, b"b \xff.jpg": H1, b"c.jpg": H2})
    facts = ImageFacts("JPEG", 640, 480, "RGB", None, None, 1, 2, False)
    media.store_outcome(catalog, media.ExtractOutcome(WorkKey(H1, "image", 1), facts), 5.0)
    media.store_outcome(
        catalog, media.ExtractOutcome(WorkKey(H2, "image", 1), ExtractionFailure("image", "bad")), 5.0
    )
    found = catalog_report.file_facts(catalog, [(1, b"a.jpg"), (1, b"b \xff.jpg"), (1, b"gone.jpg")])
    assert set(found) == {(1, b"a.jpg"), (1, b"b \xff.jpg")}
    assert all(isinstance(size, int) and isinstance(mtime, int) for size, mtime in found.values())
    known = catalog_report.media_facts(catalog, [H1, H2, H1])
    assert list(known) == [H1]  # a failed extraction has no facts
    assert known[H1]["image"]["width"] == 640 and known[H1]["image"]["format"] == "JPEG"


def test_the_last_reconcile_of_each_root(catalog: Connection) -> None:
    first = start_run(catalog, "h", "reconcile", "startup", 1, None, 10.0)
    finish_run(catalog, first, {"status": "completed", "finished": 11.0})
    second = start_run(catalog, "h", "reconcile", "manual", 1, None, 20.0)
    finish_run(catalog, second, {"status": "failed", "finished": 21.0})
    start_run(catalog, "h", "sweep", "manual", 1, None, 30.0)
    assert catalog_report.last_reconciles(catalog) == {1: ("failed", 20.0, 21.0)}


def test_entities_in_a_root(catalog: Connection) -> None:
    register(catalog, {b"Alice/a.jpg": H1})
    eid = catalog.execute(
        entities.insert()
        .values(type="character", key="alice", name="Alice", first_seen=1.0, updated=1.0)
        .returning(entities.c.id)
    ).scalar_one()
    catalog.execute(entity_links.insert().values(file_id=1, entity_id=eid, root_id=1, mapped_at=1.0))
    assert catalog_report.entities_in_root(catalog, 1) == {("character", "alice")}
    assert catalog_report.entities_in_root(catalog, 2) == set()
