"""The page drawn from values alone: every section with its figures, caps that say what they left
out, everything from the tree escaped, and nothing that could reach the network."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

from PIL import Image

from importd.report.content import (
    DupeGroup,
    DupeSection,
    Finding,
    Integrity,
    Member,
    ReportContent,
    RootLine,
)
from importd.report.html import render, section_counts


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


EVIL = "<img src=http://example.com/x onerror=alert(1)>"
ROOT = b"/srv/\xfe" + EVIL.encode()


def content(**changes: object) -> ReportContent:
    member = Member(b"/srv/p/a \xff<b>.jpg", "a" * 64, 0.0, 1000, 5.0, 640, 480, None, "JPEG", jpeg())
    small = Member(b"/srv/p/a small.jpg", "b" * 64, 3.0, 200, 9.0, 320, 240, None, "JPEG", None)
    clip = Member(b"/srv/p/clip.mp4", "c" * 64, 1.5, 9000, 2.0, 1280, 720, 3725.0, "AVC", jpeg())
    values: dict[str, object] = {
        "generated": 0.0,
        "version": "1.2.3",
        "catalog": "sqlite:////srv/state/catalog.db",
        "root": None,
        "roots": (RootLine(EVIL, ROOT, "polling", 10, 1, 0, "inotify", None, 0, 1, "ok"),),
        "gaps": {
            "completeness": {"percent": 66.6, "satisfied": 2, "required": 3, "orphaned": 1},
            "totals": {"attribute": 1, "role": 0, "scene": 0, "episode": 0},
            "entities": [{"type": "char", "name": EVIL, "missing": [{"kind": "attribute", "name": "x"}]}],
            "orphaned": [{"type": "character", "name": "Carol", "since": "2026-01-01T00:00:00.000Z",
                          "path": "/srv/p/Carol \udcff"}],
        },
        "gaps_totals": {"entities": 1501, "orphaned": 1},
        "dupes": (
            DupeSection("dupes_exact", "Exact", (DupeGroup("exact", "image", (member, member), 14),), 1235),
            DupeSection("dupes_near_image", "Near", (DupeGroup("near", "image", (member, small), 2),), 1),
            DupeSection("dupes_near_video", "Videos", (DupeGroup("near", "video", (clip, clip), 2),), 1),
        ),
        "integrity": Integrity(
            7, "completed", 3.0,
            (Finding("broken_link", b"/srv/p/l\xff", "importctl repair-links $'/srv/p/l\\xff'", EVIL),),
            {"ghost": 0, "broken_link": 3},
        ),
        "thumbnails": (2, 3),
    }  # fmt: skip
    values.update(changes)
    return ReportContent(**values)  # type: ignore[arg-type]


class Links(HTMLParser):
    """Every attribute of the page that could make a browser fetch something."""

    FETCHING = ("src", "href", "srcset", "action", "data", "poster", "background", "formaction")

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, k, v or "") for k, v in attrs if k in self.FETCHING]


def outside_links(page: str) -> list[tuple[str, str, str]]:
    """Links that leave the page: anything but an in-page anchor or an embedded JPEG."""
    parser = Links()
    parser.feed(page)
    return [
        (tag, k, v)
        for tag, k, v in parser.found
        if not (k == "href" and v.startswith("#")) and not v.startswith("data:image/jpeg;base64,")
    ]


def test_every_section_is_there_with_its_figures() -> None:
    c = content()
    page = render(c)
    counts = section_counts(c)
    for key, (shown, total) in counts.items():
        if key == "thumbnails":
            continue
        anchor = key.replace("_", "-")
        assert (
            f'<section id="{anchor}" data-section="{key}" data-shown="{shown}" data-total="{total}">' in page
        )
    assert counts["dupes_exact"] == (1, 1235) and counts["checklist"] == (1, 1501)
    assert counts["integrity"] == (1, 3) and counts["completeness"] == (2, 3)
    assert "and 1,234 more groups: <code>importctl dupes --kind exact</code>" in page
    assert "and 1,500 more entities: <code>importctl gaps</code>" in page
    assert "and 12 more copies" in page and "and 2 more findings" in page
    assert 'data-percent="66.6"' in page and "1:02:05" in page  # the video's duration


def test_what_comes_from_the_tree_is_escaped_and_nothing_is_fetched() -> None:
    page = render(content())
    assert EVIL not in page and "&lt;img src=http://example.com/x onerror=alert(1)&gt;" in page
    assert "/srv/\\xfe&lt;img" in page and "a \\xff&lt;b&gt;.jpg" in page
    assert "importctl forget $&#x27;/srv/p/Carol \\xff&#x27;" in page
    assert outside_links(page) == []
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'; img-src data:" in page
    for data in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "JPEG"


def test_keepers_and_empty_sections() -> None:
    page = render(content())
    assert "keep: largest resolution (640×480)" in page
    empty = render(
        content(
            dupes=(DupeSection("dupes_exact", "Exact duplicates", (), 0),),
            integrity=Integrity(None, None, None, (), {}),
            gaps={"completeness": {"percent": 100.0, "satisfied": 0, "required": 0}, "entities": []},
            gaps_totals={},
            roots=(),
        )
    )
    assert "No sweep has run yet" in empty and "No roots are configured." in empty
    assert "Nothing missing." in empty and "<p>None.</p>" in empty
