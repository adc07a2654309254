"""`importctl import-csv` with the real daemon and importctl: spreadsheets as they come (BOM,
UTF-16, Windows-1252, `;` and tabs, quoted newlines, accents), checked by the `[fields]` rules,
previewed without a write, committed as a run; conflicts never overwritten silently; the live
gap report equal to a recomputation after every import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Daemon
from tests.integration.test_entities import EXPECT, character

FIELDS = """
[fields.character.age]
type = "int"
min = 0
max = 150

[fields.character.born]
type = "date"
dayfirst = true

[fields.character.eyes]
type = "enum"
values = ["blue", "green", "brown"]

[fields.character.code]
type = "regex"
pattern = "C-[0-9]{4}"

[fields.character.height]
type = "float"
"""

COLUMNS = ("--type", "character", "--map", "Nom=name", "--map", "Âge=age", "--map", "Né le=born")


def studio(make_daemon: Any, tmp_path: Path, extra: str = "") -> tuple[Daemon, Path, Path]:
    root, sheets = tmp_path / "studio", tmp_path / "sheets"
    root.mkdir()
    sheets.mkdir()
    character(root, "Élodie", age=30)
    character(root, "Zoé", age=None)
    d = make_daemon({"studio": root}, extra=EXPECT + FIELDS + extra)
    d.write_config(f'\n[[roots]]\nname = "studio"\npath = "{root}"\nrules = "characters"\n')
    d.start()
    d.wait_idle()
    return d, root, sheets


def imported(d: Daemon, path: Path, *args: str, code: int = 0) -> dict[str, Any]:
    res = d.ctl("import-csv", str(path), *args, "--json")
    assert res.returncode == code, res.stderr.decode()
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def by_row(reply: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in reply["rows"]}


def assert_gaps_live(d: Daemon) -> None:
    assert d.ctl_json("gaps") == d.ctl_json("gaps", "--recompute")


def catalog_dump(d: Daemon) -> list[Any]:
    return [
        d.sql(f"SELECT * FROM {table} ORDER BY 1")
        for table in ("entities", "attribute_sources", "conflicts", "runs", "run_log")
    ]


def test_preview_writes_nothing_then_commit_is_a_run(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, sheets = studio(make_daemon, tmp_path)
    sheet = sheets / "personnages.csv"
    sheet.write_bytes(
        "\ufeffNom;Âge;Né le;Yeux;Notes\n"
        'Élodie;30;01/02/1995;Blue;"aime le thé\net les gâteaux"\n'
        "Zoé;25;;green;\n"
        "\n"
        "Marc;40;;;\n"
        "Bad;abc;31/02/2001;purple;\n"
        "Old;200;;;\n".encode()
    )
    args = (*COLUMNS, "--map", "Yeux=eyes", "--map", "Notes=notes")
    before = catalog_dump(d)
    preview = imported(d, sheet, *args, code=1)
    assert catalog_dump(d) == before, "a preview writes nothing"
    assert preview["run_id"] is None and preview["committed"] is False
    assert (preview["encoding"], preview["delimiter"]) == ("utf-8-sig", ";")
    assert preview["totals"] == {
        "create": 0, "update": 2, "unchanged": 0, "invalid": 2, "conflict": 0, "unmatched": 1,
    }  # fmt: skip
    rows = by_row(preview)
    elodie = rows[2]
    assert (elodie["action"], elodie["entity"]) == ("update", {"type": "character", "name": "Élodie"})
    assert {c["field"]: (c["current"], c["proposed"]) for c in elodie["changes"]} == {
        "born": (None, "1995-02-01"),
        "eyes": (None, "blue"),
        "notes": (None, "aime le thé\net les gâteaux"),
    }, "age 30 is the value held (not a change); the quoted newline is kept; the enum as spelled"
    assert rows[3]["changes"] == [
        {"field": "age", "current": None, "proposed": 25},
        {"field": "eyes", "current": None, "proposed": "green"},
    ]
    assert 4 not in rows, "a blank line is skipped, but keeps its row number"
    assert (rows[5]["action"], rows[5]["entity"]) == ("unmatched", None)
    bad = {e["column"]: e["message"] for e in rows[6]["errors"]}
    assert rows[6]["action"] == "invalid" and set(bad) == {"Âge", "Né le", "Yeux"}
    assert "not a whole number" in bad["Âge"] and "not a date" in bad["Né le"]
    assert "not one of blue, green, brown" in bad["Yeux"]
    assert "above the maximum 150" in rows[7]["errors"][0]["message"]

    done = imported(d, sheet, *args, "--create", "--commit", code=1)
    assert done["committed"] is True and isinstance(done["run_id"], int)
    assert done["totals"]["create"] == 1 and done["totals"]["unmatched"] == 0
    assert done["totals"]["invalid"] == 2, "nothing is written from an invalid row, the rest is"
    e = d.ctl_json("entity", "character:Élodie")
    assert e["attributes"]["born"]["value"] == "1995-02-01"
    assert (e["attributes"]["eyes"]["source"], e["attributes"]["eyes"]["detail"]) == (
        "csv",
        "personnages.csv row 2",
    )
    assert e["attributes"]["age"]["source"] == "metadata", "an equal value keeps its source"
    assert d.ctl_json("entity", "character:Zoé")["attributes"]["age"]["value"] == 25
    assert d.ctl_json("entity", "character:Marc")["attributes"]["age"]["value"] == 40
    assert "character:Bad" not in {f"{x['type']}:{x['name']}" for x in d.ctl_json("entities")}
    (run,) = [r for r in d.ctl_json("runs") if r["id"] == done["run_id"]]
    assert (run["kind"], run["status"], run["path"]) == ("csv", "completed", str(sheet))
    assert (
        run["counts"]["entities_created"],
        run["counts"]["entities_updated"],
        run["counts"]["errors"],
    ) == (
        1,
        2,
        2,
    )
    log = d.ctl_json("run", str(done["run_id"]))["log"]
    actions = {line["action"] for line in log}
    assert {"created", "updated", "invalid"} <= actions
    assert_gaps_live(d)
    text = d.ctl("import-csv", str(sheet), *args)
    assert text.returncode == 1
    out = text.stdout.decode()
    assert "preview, nothing written" in out and "✗ Âge: 'abc' is not a whole number" in out
    assert "totals: 0 create, 0 update, 3 unchanged, 2 invalid" in out


def test_a_differing_value_is_a_conflict_unless_overwritten(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, sheets = studio(make_daemon, tmp_path)
    sheet = sheets / "ages.csv"
    sheet.write_text("Nom,Âge\nÉlodie,31\nZoé,\n", encoding="utf-8")
    preview = imported(d, sheet, *COLUMNS[:6])
    rows = by_row(preview)
    assert rows[2]["action"] == "conflict"
    assert rows[2]["changes"] == [{"field": "age", "current": 30, "proposed": 31}]
    assert rows[3]["action"] == "unchanged", "a blank cell is no value, not an erase"
    done = imported(d, sheet, *COLUMNS[:6], "--commit")
    assert done["totals"]["conflict"] == 1
    (conflict,) = d.ctl_json("conflicts")
    assert (conflict["entity"], conflict["attribute"], conflict["current"], conflict["proposed"]) == (
        "Élodie",
        "age",
        30,
        31,
    )
    assert conflict["source"] == "ages.csv row 2"
    assert d.ctl_json("entity", "character:Élodie")["attributes"]["age"]["value"] == 30
    again = imported(d, sheet, *COLUMNS[:6], "--commit")
    assert again["totals"]["conflict"] == 1 and len(d.ctl_json("conflicts")) == 1, "not recorded twice"
    over = imported(d, sheet, *COLUMNS[:6], "--overwrite", "--commit")
    assert by_row(over)[2]["action"] == "update"
    age = d.ctl_json("entity", "character:Élodie")["attributes"]["age"]
    assert (age["value"], age["source"]) == (31, "csv")
    assert_gaps_live(d)


def test_encodings_and_delimiters_as_they_come(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, sheets = studio(make_daemon, tmp_path)
    utf16 = sheets / "utf16.csv"
    utf16.write_bytes("Nom\tTaille\nZoé\t1,62\n".encode("utf-16"))
    reply = imported(d, utf16, "--type", "character", "--map", "Nom=name", "--map", "Taille=height")
    assert (reply["encoding"], reply["delimiter"]) == ("utf-16", "\t")
    assert by_row(reply)[2]["changes"] == [{"field": "height", "current": None, "proposed": 1.62}]
    legacy = sheets / "excel.csv"
    legacy.write_bytes('Nom;Notes\nZoé;très bien\nÉlodie;"deux\nlignes"\n'.encode("cp1252"))
    res = d.ctl("import-csv", str(legacy), "--type", "character", "--map", "Nom=name", "--map", "Notes=notes")
    assert res.returncode == 0, res.stderr.decode()
    assert "read as Windows-1252" in res.stderr.decode()
    reply = imported(
        d, legacy, "--type", "character", "--map", "Nom=name", "--map", "Notes=notes", "--commit"
    )
    assert reply["encoding"] == "cp1252" and reply["warnings"]
    assert by_row(reply)[2]["entity"] == {"type": "character", "name": "Zoé"}
    assert d.ctl_json("entity", "character:Zoé")["attributes"]["notes"]["value"] == "très bien"
    assert d.ctl_json("entity", "character:Élodie")["attributes"]["notes"]["value"] == "deux\nlignes"
    assert_gaps_live(d)


def test_a_key_given_twice_applies_once(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, sheets = studio(make_daemon, tmp_path)
    sheet = sheets / "twice.csv"
    sheet.write_text("Nom,Âge\nZoé,20\nZOÉ,21\n zoé ,22\nÉlodie,30\n", encoding="utf-8")
    reply = imported(d, sheet, *COLUMNS[:6], "--commit", code=1)
    rows = by_row(reply)
    assert rows[2]["action"] == "update"
    for n in (3, 4):
        assert rows[n]["action"] == "invalid"
        assert rows[n]["errors"] == [{"column": "Nom", "message": "duplicate key: row 2 has it already"}]
    assert rows[5]["action"] == "unchanged"
    assert d.ctl_json("entity", "character:Zoé")["attributes"]["age"]["value"] == 20
    assert_gaps_live(d)


def test_keys_by_id_and_by_folder_and_a_mapping_file(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, root, sheets = studio(make_daemon, tmp_path)
    folders = sheets / "folders.csv"
    folders.write_text(
        f"Dossier,Code\nÉlodie,C-0001\n{root / 'Zoé'},C-0002\nNowhere,C-0003\n/elsewhere/x,C-0004\n"
        "Élodie/intro.mp4,bad\n",
        encoding="utf-8",
    )
    reply = imported(d, folders, "--type", "character", "--key", "path", "--map", "Dossier=path",
                     "--map", "Code=code", code=1)  # fmt: skip
    rows = by_row(reply)
    assert (rows[2]["action"], rows[2]["entity"]["name"]) == ("update", "Élodie"), "its files are there"
    assert (rows[3]["action"], rows[3]["entity"]["name"]) == ("update", "Zoé"), "an absolute folder"
    assert rows[4]["action"] == "unmatched"
    assert rows[5]["action"] == "invalid" and "under no root" in rows[5]["errors"][0]["message"]
    assert rows[6]["action"] == "invalid" and "does not match" in rows[6]["errors"][0]["message"]
    mapping = sheets / "ids.toml"
    mapping.write_text(
        'type = "character"\nkey = "id"\n[columns]\n"Ref" = "id"\n"Nom" = "name"\n"Âge" = "age"\n',
        encoding="utf-8",
    )
    ids = sheets / "ids.csv"
    ids.write_text("Ref,Nom,Âge\nc-0099,Nina,33\n", encoding="utf-8")
    assert by_row(imported(d, ids, "--mapping", str(mapping)))[2]["action"] == "unmatched"
    created = imported(d, ids, "--mapping", str(mapping), "--create", "--commit")
    assert by_row(created)[2]["entity"] == {"type": "character", "name": "Nina"}
    nina = d.ctl_json("entity", "character:Nina")
    assert (nina["key"], nina["attributes"]["age"]["value"]) == ("id:c-0099", 33)
    ids.write_text("Ref,Nom,Âge\nC-0099,,33\n", encoding="utf-8")
    assert by_row(imported(d, ids, "--mapping", str(mapping)))[2]["action"] == "unchanged"
    assert_gaps_live(d)


def test_required_fields_and_config_errors(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, _, sheets = studio(make_daemon, tmp_path, "\n[fields.character.species]\nrequired = true\n")
    sheet = sheets / "species.csv"
    sheet.write_text("Nom,Espèce,Âge\nÉlodie,,31\nZoé,elf,\nNew,,1\n", encoding="utf-8")
    args = (*COLUMNS[:6], "--map", "Espèce=species", "--create")
    reply = imported(d, sheet, *args, "--commit", code=1)
    rows = by_row(reply)
    assert rows[2]["errors"] == [{"column": "Espèce", "message": "species is required"}]
    assert rows[3]["action"] == "update" and rows[4]["action"] == "invalid"
    assert d.ctl_json("entity", "character:Zoé")["attributes"]["species"]["value"] == "elf"
    # Once it has a value, a blank cell leaves it be.
    sheet.write_text("Nom,Espèce,Âge\nZoé,,\n", encoding="utf-8")
    assert by_row(imported(d, sheet, *args))[2]["action"] == "unchanged"
    d.stop()
    bad = make_daemon(extra='\n[fields.character.age]\ntype = "integer"\n')
    bad.start(wait=False)
    assert bad.proc is not None and bad.proc.wait(timeout=30) == 78
    assert "fields.character.age.type" in bad.log_text()


def test_files_the_service_cannot_read_and_mappings_that_do_not_fit(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root, sheets = tmp_path / "studio", tmp_path / "sheets"
    root.mkdir()
    sheets.mkdir()
    d = make_daemon({"studio": root})
    d.start(drop_dac=True)
    sheet = sheets / "secret.csv"
    sheet.write_text("Nom\nZoé\n", encoding="utf-8")
    sheet.chmod(0)
    res = d.ctl("import-csv", str(sheet), "--type", "character", "--map", "Nom=name")
    assert res.returncode == 1
    assert "denied" in res.stderr.decode() and "cannot read it" in res.stderr.decode()
    sheet.chmod(0o644)
    res = d.ctl("import-csv", str(sheet), "--type", "character", "--map", "Name=name")
    assert res.returncode == 1 and "no column 'Name' in the file (columns: 'Nom')" in res.stderr.decode()
    res = d.ctl("import-csv", str(sheet), "--map", "Nom=name")
    assert res.returncode == 2 and "--type" in res.stderr.decode()
