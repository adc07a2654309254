"""The report as one self-contained HTML page: inline CSS, pictures as data-URI JPEGs, no script.

Plain string building: the page is a handful of repeated blocks, and every value passes through
`_t` (text) or `_p` (a path: bytes shown as `paths.display` spells them, undecodable bytes as
\\xNN) on its way in, both `html.escape`d. A Content-Security-Policy allowing nothing but inline
styles and `data:` pictures stops the page from reaching out even if something slipped through.

Each section is a `<section id=… data-shown=… data-total=…>`, so a test (or a script) can read the
figures off the page; the nav repeats them.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from importctl.findings import HEADINGS, KINDS, shell_quote
from importd.paths import display
from importd.report.content import DupeGroup, DupeSection, Integrity, Member, ReportContent, RootLine

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
:root{--fg:#1d2330;--muted:#5d6677;--bg:#f5f6f8;--card:#fff;--line:#dde1e8;--accent:#2d6cdf;
--ok:#1f8a4c;--warn:#b7791f;--bad:#c53030;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ee;--muted:#a0a8b8;--bg:#14171d;--card:#1d212a;
--line:#2e3440;--accent:#6ea1ff}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header{padding:20px 28px 8px}
h1{margin:0 0 4px;font-size:22px}
h2{margin:0 0 12px;font-size:18px}
h3{margin:0 0 6px;font-size:14px}
.sub{color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:8px;padding:8px 28px 0}
nav a{color:var(--accent);text-decoration:none;background:var(--card);border:1px solid var(--line);
border-radius:999px;padding:3px 12px}
nav b{font-weight:600}
main{padding:8px 28px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;
margin:16px 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,.path{font-family:var(--mono);font-size:12.5px;word-break:break-all}
.state{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:600;
background:#e8eefc;color:#2a4d9b}
.state.offline,.state.held,.state.failed{background:#fde8e8;color:var(--bad)}
.state.polling,.state.partial{background:#fdf3e1;color:var(--warn)}
.state.watching,.state.completed{background:#e3f5ea;color:var(--ok)}
.big{font-size:40px;font-weight:700;line-height:1}
.bar{height:10px;border-radius:5px;background:var(--line);overflow:hidden;margin:10px 0;max-width:640px}
.bar span{display:block;height:100%;background:var(--ok)}
.entities{columns:300px;column-gap:16px}
.entity{break-inside:avoid;border:1px solid var(--line);border-radius:8px;padding:8px 10px;margin:0 0 12px}
.entity ul{margin:0;padding:0;list-style:none}
.entity li::before{content:"\\2610\\00a0";color:var(--muted)}
.kind{color:var(--muted)}
.group{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:0 0 14px;
content-visibility:auto;contain-intrinsic-size:auto 240px}
.group header{padding:0;margin:0 0 8px;display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
.members{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:200px;border:1px solid var(--line);border-radius:6px;padding:6px;position:relative}
figure.video{width:530px}
figure.keep{border:2px solid var(--ok)}
figure img,.exact img{display:block;max-width:100%;border-radius:4px;background:#2222}
.noimg{height:90px;border-radius:4px;background:repeating-linear-gradient(45deg,#8881,#8881 6px,#8882 6px,
#8882 12px);display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px}
figcaption{margin-top:6px}
dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:4px 0 0;font-size:12.5px}
dt{color:var(--muted)}dd{margin:0}
.badge{display:inline-block;background:var(--ok);color:#fff;border-radius:4px;padding:0 6px;
font-size:12px;font-weight:600}
.exact{display:flex;gap:14px;align-items:flex-start}
.exact .pic{flex:0 0 auto;width:170px}
.exact.video .pic{width:520px}
.more{color:var(--muted);font-style:italic;margin:8px 0 0}
.fix code{background:#8881;border-radius:4px;padding:1px 4px}
footer{color:var(--muted);padding:0 28px 30px;font-size:12px}
"""

SECTION_TITLES = {
    "roots": "Roots",
    "completeness": "Completeness",
    "checklist": "Gap checklist",
    "orphaned": "Orphaned entities",
    "dupes_exact": "Exact duplicates",
    "dupes_near_image": "Near-duplicate pictures",
    "dupes_near_video": "Near-duplicate videos",
    "integrity": "Integrity",
}


def render(content: ReportContent) -> str:
    """The whole page."""
    counts = section_counts(content)
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>importd report{_t(' — ' + content.root) if content.root else ''}</title>",
        f"<style>{STYLE}</style></head><body>",
        _header(content),
        _nav(counts),
        "<main>",
        _roots(content.roots),
        _completeness(content.gaps),
        _checklist(content.gaps, content.gaps_totals),
        _orphaned(content.gaps, content.gaps_totals),
        *(_dupes(section) for section in content.dupes),
        _integrity(content.integrity),
        "</main>",
        _footer(content),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def section_counts(content: ReportContent) -> dict[str, tuple[int, int]]:
    """(shown, total) per section: what `render` draws and the reply's `sections` say."""
    gaps = content.gaps
    completeness = gaps.get("completeness", {})
    out: dict[str, tuple[int, int]] = {
        "roots": (len(content.roots), len(content.roots)),
        "completeness": (int(completeness.get("satisfied", 0)), int(completeness.get("required", 0))),
        "checklist": (len(gaps.get("entities", [])), content.gaps_totals.get("entities", 0)),
        "orphaned": (len(gaps.get("orphaned", [])), content.gaps_totals.get("orphaned", 0)),
    }
    for section in content.dupes:
        out[section.key] = (len(section.groups), section.total)
    out["integrity"] = (len(content.integrity.findings), sum(content.integrity.counts.values()))
    out["thumbnails"] = content.thumbnails
    return out


# ----- the blocks --------------------------------------------------------------------------


def _header(c: ReportContent) -> str:
    scope = f"root {_t(c.root)}" if c.root else "every root"
    return (
        f'<header><h1>importd catalog report</h1><div class="sub">{scope} · generated '
        f"{_t(_when(c.generated))} by importd {_t(c.version)} · catalog <code>{_t(c.catalog)}</code></div>"
        + "".join(f'<p class="more">{_t(note)}</p>' for note in c.notes)
        + "</header>"
    )


def _nav(counts: Mapping[str, tuple[int, int]]) -> str:
    links = []
    for key, title in SECTION_TITLES.items():
        if key not in counts:
            continue
        shown, total = counts[key]
        figure = f"{shown:,}/{total:,}" if key == "completeness" else f"{total:,}"
        links.append(f'<a href="#{_anchor(key)}">{_t(title)} <b>{figure}</b></a>')
    return "<nav>" + "".join(links) + "</nav>"


def _open(key: str, shown: int, total: int) -> str:
    return (
        f'<section id="{_anchor(key)}" data-section="{key}" data-shown="{shown}" data-total="{total}">'
        f"<h2>{_t(SECTION_TITLES[key])}</h2>"
    )


def _roots(roots: tuple[RootLine, ...]) -> str:
    rows = []
    for r in roots:
        watch = _t(r.watch) + (f'<br><span class="kind">{_t(r.watch_error)}</span>' if r.watch_error else "")
        held = f'<br><span class="kind">{r.held:,} held: importctl confirm-missing {_t(r.name)}</span>'
        last = _when(r.last_scan) if r.last_scan else "never"
        outcome = f' <span class="state {_t(r.last_run)}">{_t(r.last_run)}</span>' if r.last_run else ""
        rows.append(
            f'<tr><td><b>{_t(r.name)}</b><br><span class="path">{_p(r.path)}</span></td>'
            f'<td><span class="state {_t(r.state)}">{_t(r.state)}</span>{held if r.held else ""}</td>'
            f'<td class="n">{r.files:,}</td><td class="n">{r.missing:,}</td><td class="n">{r.errors:,}</td>'
            f"<td>{watch}</td><td>{_t(last)}{outcome}</td></tr>"
        )
    body = (
        '<table><thead><tr><th>root</th><th>state</th><th class="n">files</th><th class="n">missing</th>'
        '<th class="n">errors</th><th>watcher</th><th>last scan</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else '<p class="more">No roots are configured.</p>'
    )
    return _open("roots", len(roots), len(roots)) + body + "</section>"


def _completeness(gaps: Mapping[str, Any]) -> str:
    c = gaps.get("completeness", {})
    percent = float(c.get("percent", 100.0))
    satisfied, required = int(c.get("satisfied", 0)), int(c.get("required", 0))
    orphaned = int(c.get("orphaned", 0))
    totals = gaps.get("totals") or {}
    missing = ", ".join(f"{n:,} {kind}{'s' if n != 1 else ''}" for kind, n in totals.items() if n)
    return (
        _open("completeness", satisfied, required)
        + f'<div class="big" data-percent="{percent:.1f}">{percent:.1f}%</div>'
        + f'<div class="bar"><span style="width:{min(max(percent, 0.0), 100.0):.1f}%"></span></div>'
        + f"<p>{satisfied:,} of {required:,} requirements satisfied"
        + (f"; {orphaned:,} orphaned entities left out" if orphaned else "")
        + "</p>"
        + (f"<p>Missing: {_t(missing)}</p>" if missing else "<p>Nothing missing.</p>")
        + "</section>"
    )


def _checklist(gaps: Mapping[str, Any], totals: Mapping[str, int]) -> str:
    entities = gaps.get("entities", [])
    total = totals.get("entities", len(entities))
    blocks = []
    for e in entities:
        items = "".join(
            f'<li><span class="kind">{_t(m["kind"])}:</span> {_t(str(m["name"]))}</li>' for m in e["missing"]
        )
        blocks.append(
            f'<div class="entity"><h3><span class="kind">{_t(e["type"])}</span> {_t(e["name"])}</h3>'
            f"<ul>{items}</ul></div>"
        )
    body = f'<div class="entities">{"".join(blocks)}</div>' if blocks else "<p>Nothing missing.</p>"
    return (
        _open("checklist", len(entities), total)
        + body
        + _more(total - len(entities), "entities", "importctl gaps")
        + "</section>"
    )


def _orphaned(gaps: Mapping[str, Any], totals: Mapping[str, int]) -> str:
    orphans = gaps.get("orphaned", [])
    total = totals.get("orphaned", len(orphans))
    rows = []
    for o in orphans:
        where = shell_quote(os.fsencode(o["path"])) if o.get("path") else "FOLDER"
        fix = f"restore them, or settle it: importctl forget {where}"
        rows.append(
            f'<tr><td class="kind">{_t(o["type"])}</td><td>{_t(o["name"])}</td>'
            f'<td>{_t(o.get("since") or "")}</td><td class="fix"><code>{_t(fix)}</code></td></tr>'
        )
    body = (
        "<p>Every file of these entities is gone; they are left out of completeness.</p><table><thead><tr>"
        "<th>type</th><th>name</th><th>all files gone since</th><th>fix</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p>None.</p>"
    )
    return (
        _open("orphaned", len(orphans), total)
        + body
        + _more(total - len(orphans), "orphaned entities", "importctl gaps")
        + "</section>"
    )


def _dupes(section: DupeSection) -> str:
    groups = "".join(_exact(g) if g.kind == "exact" else _near(g) for g in section.groups)
    if not section.groups:
        groups = "<p>None.</p>"
    kind = "exact" if section.key == "dupes_exact" else "near"
    return (
        _open(section.key, len(section.groups), section.total)
        + groups
        + _more(section.total - len(section.groups), "groups", f"importctl dupes --kind {kind}")
        + "</section>"
    )


def _exact(g: DupeGroup) -> str:
    """Copies of one content: the picture once, the paths beside it."""
    keeper = g.keeper
    first = g.members[0] if g.members else None
    rows = []
    for i, m in enumerate(g.members):
        badge = f' <span class="badge" title="{_t(keeper.reason)}">keep</span>' if i == keeper.index else ""
        rows.append(
            f"<tr{' class=keep' if i == keeper.index else ''}>"
            f'<td><span class="path">{_p(m.path)}</span>{badge}</td>'
            f"<td>{_t(_when(m.mtime) if m.mtime else '')}</td></tr>"
        )
    facts = _facts(first, with_distance=False) if first else ""
    pic = f'<div class="pic">{_picture(first)}<dl>{facts}</dl></div>' if first else ""
    return (
        f'<article class="group" data-kind="exact" data-media="{g.media}" data-paths="{g.paths}">'
        f'<header><b>{g.paths:,} copies</b><span class="kind">{_t(g.media)}</span>'
        f"<code>{_t(first.blake3[:16] if first else '')}</code>"
        f"<span>keep: {_t(keeper.reason)}</span></header>"
        f'<div class="exact {g.media}">{pic}<table><thead><tr><th>path</th><th>modified</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        + _more(g.paths - len(g.members), "copies", "importctl dupes --kind exact")
        + "</article>"
    )


def _near(g: DupeGroup) -> str:
    """Similar contents side by side, each with its facts and its distance to the group's anchor."""
    keeper = g.keeper
    figures = []
    for i, m in enumerate(g.members):
        keep = i == keeper.index
        badge = f'<div><span class="badge">keep</span> {_t(keeper.reason)}</div>' if keep else ""
        figures.append(
            f'<figure class="{g.media}{" keep" if keep else ""}">{_picture(m)}'
            f'<figcaption><span class="path">{_p(m.path)}</span>{badge}'
            f"<dl>{_facts(m, with_distance=True)}</dl></figcaption></figure>"
        )
    return (
        f'<article class="group" data-kind="near" data-media="{g.media}" data-paths="{g.paths}">'
        f'<header><b>{g.paths:,} files</b><span class="kind">near {_t(g.media)}</span>'
        f"<span>keep: {_t(keeper.reason)}</span></header>"
        f'<div class="members">{"".join(figures)}</div>'
        + _more(g.paths - len(g.members), "files", "importctl dupes --kind near")
        + "</article>"
    )


def _picture(m: Member) -> str:
    if m.thumbnail is None:
        return '<div class="noimg">no preview</div>'
    data = base64.b64encode(m.thumbnail).decode("ascii")
    return f'<img class="thumb" alt="" src="data:image/jpeg;base64,{data}">'


def _facts(m: Member, *, with_distance: bool) -> str:
    rows: list[tuple[str, str]] = []
    if m.size is not None:
        rows.append(("size", _bytes(m.size)))
    if m.width and m.height:
        rows.append(("resolution", f"{m.width}×{m.height}"))
    if m.duration_s:
        rows.append(("duration", _duration(m.duration_s)))
    if m.codec:
        rows.append(("codec", m.codec))
    if with_distance:
        rows.append(("distance", f"{m.distance:g}"))
    return "".join(f"<dt>{_t(k)}</dt><dd>{_t(v)}</dd>" for k, v in rows)


def _integrity(i: Integrity) -> str:
    total = sum(i.counts.values())
    head = _open("integrity", len(i.findings), total)
    if i.run_id is None:
        return head + "<p>No sweep has run yet: <code>importctl check</code> looks.</p></section>"
    summary = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in i.counts.items() if n) or "nothing found"
    parts = [
        head,
        f'<p>Last sweep: run {i.run_id}, <span class="state {_t(i.state or "")}">{_t(i.state or "?")}</span>'
        f"{' at ' + _t(_when(i.finished)) if i.finished else ''}: {_t(summary)}. "
        "<code>importctl check</code> runs a new one.</p>",
    ]
    for kind in KINDS:
        found = [f for f in i.findings if f.kind == kind]
        if not found and not i.counts.get(kind):
            continue
        rows = "".join(
            f'<tr><td><span class="path">{_p(f.path)}</span>'
            + (f'<br><span class="kind">{_t(f.detail)}</span>' if f.detail else "")
            + f'</td><td class="fix"><code>{_t(f.fix)}</code></td></tr>'
            for f in found
        )
        n = i.counts.get(kind, len(found))
        parts.append(
            f'<h3 data-kind="{kind}" data-count="{n}">{_t(HEADINGS[kind])} ({n:,})</h3>'
            f"<table><thead><tr><th>path</th><th>fix</th></tr></thead><tbody>{rows}</tbody></table>"
            + _more(n - len(found), "findings", f"importctl check --json (run {i.run_id})")
        )
    parts.append("</section>")
    return "".join(parts)


def _footer(c: ReportContent) -> str:
    return (
        f"<footer>importd {_t(c.version)} · {_t(_when(c.generated))} · "
        "the same figures as <code>importctl status</code>, <code>gaps</code>, <code>dupes</code> and "
        "<code>check</code></footer>"
    )


# ----- spelling ----------------------------------------------------------------------------


def _t(text: str) -> str:
    return html.escape(text, quote=True)


def _p(raw: bytes) -> str:
    return html.escape(display(raw), quote=True)


def _anchor(key: str) -> str:
    return key.replace("_", "-")


def _more(n: int, what: str, command: str) -> str:
    if n <= 0:
        return ""
    return f'<p class="more">and {n:,} more {_t(what)}: <code>{_t(command)}</code></p>'


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
