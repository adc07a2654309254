"""Dates and times for file names and records, from a clock value passed in (never read here)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def day(now: float, tz: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(now, tz).strftime("%Y-%m-%d")


def iso(now: float, tz: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(now, tz).isoformat(timespec="milliseconds")
