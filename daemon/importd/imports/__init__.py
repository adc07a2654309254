"""Bringing old metadata in: spreadsheets (CSV) and legacy catalogs (SQLite), each read by a
pure stage of its own, previewed, then committed as a run."""
