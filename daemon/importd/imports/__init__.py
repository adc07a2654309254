"""Bringing old metadata in: the pure stages of each import, one module per source. A
spreadsheet (CSV): `csv_rows` reads it, `csv_mapping` maps its columns to entity attributes and
plans what a row changes (written by `catalog/csv_import.py`, driven by `api/csv_import.py`). A
legacy catalog (SQLite): `legacy` reads it per its mapping and decides each row's action,
`migration` runs the preview or the commit (written by `catalog/legacy.py`, driven by
`api/legacy.py`). Each is previewed, then committed as a run, through the single writer."""
