"""Bringing old metadata in: the pure stages of each import (reading a source, mapping its
columns to entity attributes, planning what a row changes). What they decide is written by
`catalog/imports.py` through the single writer; the API handlers (`api/csv_import.py`) drive
them. One module per source: `csv_rows` reads a spreadsheet, `csv_mapping` maps its columns."""
