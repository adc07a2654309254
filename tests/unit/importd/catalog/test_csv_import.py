"""One batch of CSV rows against the catalog: a preview reads only, a commit writes values with
their source (kind csv, the file's row, the run), records conflicts, or overwrites when told."""

from __future__ import annotations

import json

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection

from importd.catalog.csv_import import csv_batch
from importd.catalog.entities import _Batch
from importd.catalog.tables import attribute_sources, conflicts, entities, run_log
from importd.entities import AttributeSet, EntitySeen
from importd.entities.fields import parse_fields
from importd.imports.csv_mapping import CsvImportSpec, ParsedRow, bind_columns, parse_row

RULES = parse_fields({"character": {"age": {"type": "int"}}})


def rows(spec: CsvImportSpec, *cells: list[str]) -> list[ParsedRow]:
    cols = bind_columns(["Nom", "Âge"], spec)
    return [parse_row(cols, RULES, "character", n, c) for n, c in enumerate(cells, 2)]


def seed(conn: Connection) -> None:
    batch = _Batch(conn, 1.0, {})
    elodie = batch.ensure("character", "name:élodie", "Élodie", 0, "seed")
    batch.merge(elodie, {"age": 30}, 0, "seed", "metadata")
    batch.flush_entities()


def count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_preview_then_commit(catalog: Connection) -> None:
    seed(catalog)
    spec = CsvImportSpec("character", "name", (("Nom", "name"), ("Âge", "age")), create=True)
    batch = rows(spec, ["élodie", "31"], ["Zoé", "20"], ["Marc", ""])
    before = [count(catalog, t) for t in (entities, conflicts, attribute_sources, run_log)]
    preview = csv_batch(catalog, batch, spec, RULES, {}, source="a.csv", now=2.0, run_id=None, write=False)
    assert [(r.action, r.entity) for r in preview.rows] == [
        ("conflict", ("character", "Élodie")),
        ("create", ("character", "Zoé")),
        ("create", ("character", "Marc")),
    ]
    assert preview.events == []
    assert [count(catalog, t) for t in (entities, conflicts, attribute_sources, run_log)] == before
    done = csv_batch(catalog, batch, spec, RULES, {}, source="a.csv", now=2.0, run_id=7, write=True)
    assert [r.action for r in done.rows] == [r.action for r in preview.rows]
    assert sum(isinstance(e, EntitySeen) for e in done.events) == 2
    assert any(isinstance(e, AttributeSet) and e.value == 20 for e in done.events)
    (conflict,) = catalog.execute(select(conflicts.c.attribute, conflicts.c.proposed, conflicts.c.source))
    assert tuple(conflict) == ("age", "31", "a.csv row 2")
    source = catalog.execute(
        select(attribute_sources.c.kind, attribute_sources.c.source, attribute_sources.c.run_id)
        .join(entities, entities.c.id == attribute_sources.c.entity_id)
        .where(entities.c.name == "Zoé")
    ).one()
    assert tuple(source) == ("csv", "a.csv row 3", 7)
    over = CsvImportSpec("character", "name", spec.columns, overwrite=True)
    again = csv_batch(catalog, rows(over, ["Élodie", "31"]), over, RULES, {}, source="b.csv", now=3.0,
                      run_id=8, write=True)  # fmt: skip
    assert again.rows[0].action == "update"
    attrs = catalog.execute(select(entities.c.attributes).where(entities.c.name == "Élodie")).scalar_one()
    assert json.loads(attrs) == {"age": 31}
