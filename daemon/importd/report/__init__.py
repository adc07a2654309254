"""The HTML report (`importctl report --html FILE`): what it shows (`content`), how it is drawn
(`html`), and its small pictures (`thumbnails`, run in the media pool)."""

from importd.report.content import DupeGroup, DupeSection, Finding, Integrity, Member, ReportContent, RootLine
from importd.report.html import render, section_counts

__all__ = [
    "DupeGroup",
    "DupeSection",
    "Finding",
    "Integrity",
    "Member",
    "ReportContent",
    "RootLine",
    "render",
    "section_counts",
]
