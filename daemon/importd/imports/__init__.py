"""Bringing old metadata in: the pure stages of each import, one module per source. A
spreadsheet (CSV): `csv_rows` reads it, `csv_mapping` maps its columns to entity attributes and
plans what a row changes (written by `catalog/csv_import.py`, driven by `api/csv_import.py`). A
legacy catalog (SQLite): `legacy` reads it per its mapping and decides each row's action
(`pipeline/legacy_migration.py` runs the preview or the commit, written by `catalog/legacy.py`).
These stages import nothing of the catalog: the catalog and the pipeline import them. Each
import is previewed, then committed as a run, through the single writer."""
