"""`importctl`: each command calls one client method and formats the answer.

Exit codes: 0 ok, 1 the daemon answered with an error, 2 usage, 3 daemon unreachable.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.shell_completion import shell_complete

from importctl import __version__
from importctl.client import DEFAULT_TIMEOUT_S, Client, ClientError, DaemonError, DaemonUnreachable
from importctl.protocol import (
    DEFAULT_ERRORS_LIMIT,
    DEFAULT_IMPORT_ROWS_LIMIT,
    DEFAULT_LEGACY_ROWS_LIMIT,
    DEFAULT_PREVIEW_LIMIT,
    DEFAULT_REPORT_GROUPS,
    DEFAULT_RUNS_LIMIT,
    DEFAULT_UNMATCHED_LIMIT,
    DUPE_KINDS,
    EXIT_DAEMON_ERROR,
    EXIT_UNREACHABLE,
    EXPORT_FORMATS,
    IMPORT_KEY_MODES,
    MAX_ERRORS_LIMIT,
    MAX_IMPORT_ROWS_LIMIT,
    MAX_LEGACY_ROWS_LIMIT,
    MAX_PREVIEW_LIMIT,
    MAX_REPORT_GROUPS,
    MAX_RUNS_LIMIT,
    MAX_UNMATCHED_LIMIT,
    PAUSABLE,
    TERMINAL_STATES,
    CsvImportReply,
    EnrichReply,
    Event,
    FilesEvent,
    FileTag,
    GapsEvent,
    GapsReply,
    LinkAction,
    LinkProposal,
    MigrationStatus,
    ScanReply,
    SiteStatus,
    Topic,
    display_path,
)
from importctl.transfer import TransferError, write_backup, write_export

F = TypeVar("F", bound=Callable[..., Any])


def shown(path: str) -> str:
    """A path (as it came over the wire) for a terminal."""
    return display_path(os.fsencode(path))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=True))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


class Context:
    def __init__(self, socket: Path | None, timeout: float) -> None:
        self.client = Client(socket, timeout)
        # `--version` shows both versions itself: no mismatch warning after it.
        self.versions_shown = False

    def checked(self) -> Client:
        return self.client


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")(fn)


# click's completion protocol: `_IMPORTCTL_COMPLETE=bash_source importctl` prints the script to
# source, and the script calls back with `bash_complete` (zsh_*, fish_* alike). See the README.
PROG_NAME = "importctl"
COMPLETE_VAR = "_IMPORTCTL_COMPLETE"


# invoke_without_command: `importctl --version` alone reaches the callback, after --socket and
# --timeout are parsed (an eager --version would run before them).
@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    no_args_is_help=True,
)
@click.option(
    "--socket",
    # readable=False: click would refuse a socket this user may not open as a usage error (exit
    # 2); the client says so itself, with the group that grants it (exit 3).
    type=click.Path(path_type=Path, readable=False),
    envvar="IMPORTD_SOCKET",
    default=None,
    help="control socket (default: IMPORTD_SOCKET, /run/importd/control.sock, or the XDG runtime dir)",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="seconds to wait for the daemon",
)
@click.option(
    "--version",
    "show_version",
    is_flag=True,
    help="print importctl's version, and importd's when it answers, then exit",
)
@click.pass_context
def cli(ctx: click.Context, socket: Path | None, timeout: float, show_version: bool) -> None:
    """Ask importd what it knows of the legacy roots."""
    ctx.obj = Context(socket, timeout)
    if show_version:
        print_versions(ctx.obj)
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        raise click.UsageError("Missing command.", ctx)


def print_versions(obj: Context) -> None:
    """``importctl X`` and ``importd Y``, or why importd did not say; never an error exit."""
    obj.versions_shown = True
    click.echo(f"importctl {__version__}")
    client = obj.client
    try:
        status = client.status()
    except ClientError as exc:
        reason = f"{exc.code.value}: {exc.message}" if isinstance(exc, DaemonError) else str(exc)
        click.echo(f"importd: unreachable ({reason})")
        return
    daemon = status.get("version") or client.daemon_version or "unknown"
    note = "" if daemon == __version__ else "; differs from importctl: upgrade both together"
    click.echo(f"importd {daemon} (pid {status.get('pid')}, {client.socket_path}{note})")


def _client(ctx: click.Context) -> Client:
    obj = ctx.find_object(Context)
    assert obj is not None
    return obj.client


_FFMPEG_SOURCES = {"path": "PATH", "imageio-ffmpeg": "the imageio-ffmpeg wheel"}


@cli.command()
@click.option("--site", is_flag=True, help="every server sharing the catalog, not only this one")
@json_option
@click.pass_context
def status(ctx: click.Context, site: bool, as_json: bool) -> None:
    """Roots, file counts, queues and throughput.

    With --site: every server sharing the catalog, its daemon's liveness and its roots."""
    data = _client(ctx).status(site)
    if as_json:
        emit_json(data)
        return
    files = data["files"]
    click.echo(
        f"importd {data['version']} on {data.get('host', '?')}, up {data['uptime_s']:.0f}s, "
        f"catalog {data.get('catalog', '')}"
    )
    click.echo(
        f"files: {files['present']} present ({human_bytes(data['bytes'])}), "
        f"{files['missing']} missing, {files['error']} in error"
    )
    q = data["queue"]
    click.echo(
        f"queue: {q['settling']} settling, {q['hashing']} hashing; "
        f"{data['hashed_files_per_s']:.1f} files/s, {data['hashed_mib_per_s']:.1f} MiB/s; "
        f"{data['counters']['hashed_files']} hashed since start"
    )
    for root in data["roots"]:
        line = f"  {root['name']:<16} {root['state']:<9} {root['files']:>9} files  {shown(root['path'])}"
        if root.get("held"):
            line += f"  ({root['held']} held)"
        click.echo(line)
    last = data.get("last_scan")
    if last:
        click.echo(
            f"last scan: {last['root']} {last['state']} at {last['finished'] or last['started']}: "
            f"{last['files_seen']} seen, {last['changed']} changed, {last['vanished']} vanished"
        )
    media = data.get("media")
    if media and media.get("enabled"):
        faces = media["faces"]
        click.echo(
            f"media: {media['queued']} queued, {media['running']} running, {media['done']} done, "
            f"{media['failed']} failed; faces {faces['state']}"
            + (f" ({faces['reason']})" if faces["reason"] else "")
        )
        ffmpeg = media.get("ffmpeg")
        if ffmpeg:
            click.echo(
                f"ffmpeg: {shown(ffmpeg['path'])} (from {_FFMPEG_SOURCES.get(ffmpeg['source'] or '', '?')})"
                if ffmpeg["path"]
                else f"ffmpeg: none ({ffmpeg['problem']}): video fingerprints fail"
            )
    maint = data.get("maintenance")
    if maint:
        scrub = maint["scrub"]
        links = ", ".join(f"{n} {state}" for state, n in sorted(maint["links"].items())) or "none"
        click.echo(
            f"symlinks: {links}; verified {scrub['verified']} of {scrub['files']} files"
            + (f", oldest verification {scrub['oldest_verified']}" if scrub["oldest_verified"] else "")
        )
        sweep = maint.get("last_sweep")
        if sweep:
            found = ", ".join(f"{n} {k}" for k, n in sweep["counts"].items() if n) or "nothing found"
            click.echo(f"last sweep: run {sweep['run_id']} {sweep['state']} at {sweep['finished']}: {found}")
    comp = data.get("completeness")
    if comp:
        orphaned = f"; {comp['orphaned']} orphaned left out" if comp.get("orphaned") else ""
        click.echo(
            f"completeness: {comp['percent']:.1f}% ({comp['satisfied']} of {comp['required']} "
            f"requirements{orphaned})"
        )
    mig = data.get("migration")
    if mig and (mig["pending"] or mig["done"] or mig["missing"] or mig["failed"]):
        click.echo(_migration_line(mig))
    if "site" in data:
        _site_text(data["site"])
    for warning in data.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


def _site_text(site: SiteStatus) -> None:
    files, comp = site["files"], site["completeness"]
    click.echo(
        f"site: {len(site['hosts'])} server(s); {files['present']} files present "
        f"({human_bytes(site['bytes'])}), {files['missing']} missing, {files['error']} in error; "
        f"completeness {comp['percent']:.1f}% ({comp['satisfied']} of {comp['required']} requirements)"
    )
    for host in site["hosts"]:
        mark = " (this one)" if host["this"] else ""
        click.echo(
            f"  {host['name']:<20} {host['state']:<8} heartbeat {host['heartbeat']}, "
            f"importd {host['version']}, pid {host['pid']}{mark}"
        )
        for root in site["roots"]:
            if root["host"] == host["name"]:
                click.echo(
                    f"    {root['name']:<16} {root['files']:>9} files {human_bytes(root['bytes']):>10}  "
                    f"{shown(root['path'])}"
                )


def _migration_line(mig: MigrationStatus) -> str:
    return (
        f"migration: {mig['state']}, {mig['pending']} pending, {mig['done']} done, "
        f"{mig['missing']} missing, {mig['failed']} failed; {mig['rate_per_s']:.1f} rows/s"
    )


@cli.command()
@click.argument("target", required=False)
@click.option("--wait", is_flag=True, help="wait until the scan ends, showing progress")
@json_option
@click.pass_context
def scan(ctx: click.Context, target: str | None, wait: bool, as_json: bool) -> None:
    """Reconcile ROOT (a root name), PATH (a folder or file under a root), or every root."""
    client = _client(ctx)
    if target and not os.path.isabs(target) and os.path.exists(target):
        target = os.path.abspath(target)
    started = client.scan(target)
    scans = started["scans"]
    if not wait:
        if as_json:
            emit_json(started)
        else:
            for s in scans:
                click.echo(
                    f"scan {s['scan_id']} of {s['root']}{'/' + shown(s['path']) if s['path'] else ''} queued"
                )
        return
    tty = sys.stderr.isatty() and not as_json
    final = []
    for s in scans:
        while True:
            progress = client.scan_progress(s["scan_id"])
            if tty:
                click.echo(
                    f"\r{progress['root']}: {progress['state']:<9} {progress['files_seen']:>9} seen "
                    f"{progress['changed']:>7} changed {progress['pending']:>7} pending",
                    nl=False,
                    err=True,
                )
            if progress["state"] in TERMINAL_STATES:
                break
            time.sleep(0.2)
        if tty:
            click.echo("", err=True)
        final.append(progress)
    if as_json:
        emit_json({"scans": final})
    else:
        for p in final:
            click.echo(
                f"{p['root']}: {p['state']}: {p['files_seen']} files seen, {p['changed']} changed, "
                f"{p['vanished']} vanished, {p['errors']} unreadable"
                + (f" ({p['message']})" if p["message"] else "")
            )
    if any(p["state"] == "partial" for p in final):
        click.echo("importctl: some files could not be read; see: importctl errors", err=True)
    if any(p["state"] not in ("completed", "partial") for p in final):
        ctx.exit(EXIT_DAEMON_ERROR)


@cli.command()
@click.argument("query")
@click.option("--all", "show_all", is_flag=True, help="also the forgotten rows (importctl forget)")
@click.option("--site", is_flag=True, help="every server sharing the catalog, not only this one")
@json_option
@click.pass_context
def find(ctx: click.Context, query: str, show_all: bool, site: bool, as_json: bool) -> None:
    """Catalog rows for a PATH (file or folder) or a BLAKE3 HASH (or its prefix)."""
    rows = _client(ctx).find(query, show_all, site)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        digest = (r["blake3"] or "-")[:16]
        where = f"{r['host']}:" if site else ""
        click.echo(f"{r['status']:<8} {digest:<16} {human_bytes(r['size']):>10}  {where}{shown(r['path'])}")
        entity = r.get("entity")
        if entity:
            approved = ", pre-approved" if entity["pre_approved"] else ""
            click.echo(f"         {entity['type']} {shown(entity['name'])} ({entity['role']}{approved})")
        if r.get("error"):
            click.echo(f"         error: {r['error']}")
        if r.get("tags"):
            click.echo(f"         tags: {_tag_list(r['tags'])}")


@cli.command()
@click.option(
    "--limit", type=click.IntRange(1, MAX_ERRORS_LIMIT), default=DEFAULT_ERRORS_LIMIT, show_default=True
)
@json_option
@click.pass_context
def errors(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Files, folders and roots in error, with the reason."""
    rows = _client(ctx).errors(limit)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no errors")
    for r in rows:
        click.echo(f"{r['kind']:<9} {shown(r['path'])}: {r['error']}")


@cli.command()
@click.option("--kind", type=click.Choice(DUPE_KINDS), default=None, help="only this kind")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="near: max pHash Hamming distance in bits (default 10); face: min cosine similarity (default 0.5)",
)
@click.option("--site", is_flag=True, help="across every server sharing the catalog, not only this one")
@json_option
@click.pass_context
def dupes(ctx: click.Context, kind: str | None, threshold: float | None, site: bool, as_json: bool) -> None:
    """Groups of duplicates: exact (same BLAKE3), near (similar pictures or videos), face (same person)."""
    data = _client(ctx).dupes(kind, threshold, site)
    if as_json:
        emit_json(data)
        return
    faces = data.get("faces", {})
    if kind in (None, "face") and faces.get("state") == "disabled":
        click.echo(f"importctl: faces are disabled: {faces.get('reason')}", err=True)
    if not data["groups"]:
        click.echo("no duplicates")
    for group in data["groups"]:
        label = group["kind"] + (f" {group['media']}" if group.get("media") else "")
        click.echo(
            f"{label} ({len(group['paths'])} files)"
            + (f" {group['blake3'][:16]}" if group["kind"] == "exact" else "")
        )
        for member in group["members"]:
            measure = ""
            if group["kind"] == "near":
                measure = f"d={member['distance']:g} "
            elif group["kind"] == "face":
                measure = f"sim={member['similarity']:.2f} face {member['face']} "
            where = f"{member['host']}:" if site else ""
            click.echo(f"  {measure}{where}{shown(member['path'])}")


@cli.command()
@click.argument("query")
@json_option
@click.pass_context
def info(ctx: click.Context, query: str, as_json: bool) -> None:
    """Everything known about one file (PATH) or content (HASH): row, media, hashes, faces, duplicates."""
    data = _client(ctx).info(query)
    if as_json:
        emit_json(data)
        return
    f = data["file"]
    click.echo(f"{shown(f['path'])}")
    click.echo(f"  status {f['status']}, {human_bytes(f['size'])}, blake3 {f['blake3']}")
    click.echo(f"  first seen {f['first_seen']}, last seen {f['last_seen']}")
    e = f.get("entity")
    if e:
        click.echo(
            f"  {e['type']} {shown(e['name'])} ({e['role']}{', pre-approved' if e['pre_approved'] else ''})"
        )
    if f.get("tags"):
        click.echo(f"  tags: {_tag_list(f['tags'])}")
    for name, v in data.get("attributes", {}).items():
        click.echo(f"  {name} = {json.dumps(v['value'], ensure_ascii=False)}  ({v['source']}: {v['detail']})")
    media = data.get("media")
    if media:
        details = ", ".join(f"{k} {v}" for k, v in media.items() if v not in (None, [], "") and k != "kind")
        click.echo(f"  {media['kind']}: {details}")
    for ex in data.get("extractions", []):
        if ex["status"] != "ok":
            click.echo(f"  {ex['extractor']} failed: {ex['error']}")
    for face in data.get("faces", []):
        box = ", ".join(f"{v:.0f}" for v in face["bbox"])
        click.echo(f"  face {face['index']}: box ({box}), score {face['det_score']:.2f}")
    for group in data.get("duplicates", []):
        paths = group.get("paths") or [m["path"] for m in group.get("members", [])]
        click.echo(f"  {group['kind']} duplicates: " + ", ".join(shown(p) for p in paths if p != f["path"]))


def _tag_list(tags: list[FileTag]) -> str:
    return ", ".join(t["name"] + (f" ({t['color']})" if t["color"] else "") for t in tags)


def _who() -> str:
    """Who confirmed a change, for the repair log."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = f"uid {os.getuid()}"
    return f"{user} via importctl (pid {os.getpid()})"


def _abs_target(target: str | None) -> str | None:
    if target and not os.path.isabs(target) and os.path.exists(target):
        return os.path.abspath(target)
    return target


@cli.command(name="repair-links")
@click.argument("target", required=False)
@click.option("--dry-run", is_flag=True, help="only show what would be done")
@click.option(
    "--yes", is_flag=True, help="apply every proposal (repairs and orphan trash moves) without asking"
)
@json_option
@click.pass_context
def repair_links(ctx: click.Context, target: str | None, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Propose (and, when confirmed, apply) repairs for broken symlinks under ROOT or PATH.

    On a terminal it asks for each link: yes / no / all / quit. Without a terminal and without
    --yes it only reports. A link with no candidate is moved to the trash (importctl restore puts
    it back); a link with several candidates is listed, never guessed.
    """
    client = _client(ctx)
    proposals = client.repair_links(_abs_target(target))["links"]
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not (yes or dry_run or as_json)
    if dry_run or not (yes or interactive):
        if as_json:
            emit_json({"links": proposals})
        else:
            _print_proposals(proposals)
            if proposals and not dry_run:
                click.echo(
                    "not a terminal: nothing changed (use --yes to apply, --dry-run to only look)", err=True
                )
        return
    actionable = [p for p in proposals if p["action"] in ("repair", "trash")]
    chosen: list[LinkAction] = []
    apply_all = yes
    for p in actionable:
        if not apply_all:
            click.echo(_proposal_line(p))
            answer = _ask("apply? [y]es / [n]o / [a]ll / [q]uit ")
            if answer == "q":
                break
            if answer == "n":
                continue
            if answer == "a":
                apply_all = True
        action: LinkAction = {"link": p["link"], "action": p["action"]}
        if p["action"] == "repair":
            action["candidate"] = p["candidates"][0]["path"]
        chosen.append(action)
    results = client.apply_links(chosen, _who())["results"] if chosen else []
    if as_json:
        emit_json({"links": proposals, "results": results})
        return
    for r in results:
        where = r.get("new_target") or r.get("trash_path") or ""
        click.echo(
            f"{r['status']:<6} {r['action']:<6} {shown(r['link'])}" + (f" -> {shown(where)}" if where else "")
        )
        if r["detail"]:
            click.echo(f"       {r['detail']}")
    skipped = [p for p in proposals if p["action"] == "skip" and p["candidates"]]
    for p in skipped:
        click.echo(f"not repaired (choose by hand): {_proposal_line(p)}")
    if any(r["status"] == "failed" for r in results):
        ctx.exit(EXIT_DAEMON_ERROR)


def _ask(prompt: str) -> str:
    while True:
        click.echo(prompt, nl=False)
        line = sys.stdin.readline()
        if not line:
            return "q"
        answer = line.strip().lower()[:1]
        if answer in ("y", "n", "a", "q"):
            return answer


def _proposal_line(p: LinkProposal) -> str:
    head = f"{shown(p['link'])} -> {shown(p['old_target'])} [{p['state']}]"
    if p["action"] == "repair":
        c = p["candidates"][0]
        return f"{head}\n    repair to {shown(c['path'])} ({c['reason']})"
    if p["action"] == "trash":
        return f"{head}\n    no candidate: move the link to the trash"
    cands = "".join(f"\n    candidate: {shown(c['path'])} ({c['reason']})" for c in p["candidates"])
    return f"{head}\n    skip: {p['note']}{cands}"


def _print_proposals(proposals: list[LinkProposal]) -> None:
    if not proposals:
        click.echo("no broken symlinks")
    for p in proposals:
        click.echo(_proposal_line(p))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="also the restored ones")
@json_option
@click.pass_context
def trash(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Orphan symlinks moved to the trash (nothing is ever deleted)."""
    data = _client(ctx).trash(show_all)
    if as_json:
        emit_json(data)
        return
    if not data["items"]:
        click.echo("the trash is empty")
    for item in data["items"]:
        state = f" (restored {item['restored_at']})" if item.get("restored_at") else ""
        click.echo(
            f"#{item['id']} {item['when']} {shown(item['original'])} -> {shown(item['target'])}{state}"
        )


@cli.command()
@click.argument("trash_id", type=int)
@json_option
@click.pass_context
def restore(ctx: click.Context, trash_id: int, as_json: bool) -> None:
    """Put a trashed link back where it was."""
    data = _client(ctx).restore(trash_id, _who())
    if as_json:
        emit_json(data)
    else:
        click.echo(f"restored {shown(data['path'])}")


@cli.command()
@click.argument("target", required=False)
@click.option("--verify-hash", is_flag=True, help="also re-hash files, oldest verification first (a scrub)")
@click.option("--budget", default=None, help="stop verifying after this much: 30m, 2h, 500GiB, 1TB")
@click.option("--json-lines", "json_lines", is_flag=True, help="one JSON finding per line")
@json_option
@click.pass_context
def check(
    ctx: click.Context,
    target: str | None,
    verify_hash: bool,
    budget: str | None,
    json_lines: bool,
    as_json: bool,
) -> None:
    """Report every inconsistency between the catalog and the disks. Fixes nothing.

    Exit status is a bit mask: 8 ghost entries, 16 orphan files, 32 broken links,
    64 hash mismatches, 128 unreadable (1-3 keep their meaning for every command).
    """
    from importctl.findings import FindingReport

    client = _client(ctx)
    started = client.check(_abs_target(target), verify_hash, budget)
    run_id = started["run_id"]
    tty = sys.stderr.isatty() and not (as_json or json_lines)
    while True:
        result = client.check_result(run_id)
        if result["state"] != "running":
            break
        if tty:
            p = result["progress"]
            scrub = p.get("scrub") or {}
            click.echo(
                f"\rsweep {run_id}: {p['phase']:<9} {p['files_seen']:>9} files walked"
                + (f", {scrub.get('files', 0)} verified" if verify_hash else "")
                + f", {p['findings']} findings",
                nl=False,
                err=True,
            )
        time.sleep(0.1)
    if tty:
        click.echo("", err=True)
    report = FindingReport.from_json(result)
    if as_json:
        emit_json(result)
    elif json_lines:
        for line in report.json_lines():
            click.echo(line)
    else:
        click.echo(report.text())
        scrub = result.get("scrub") or {}
        if verify_hash and scrub:
            click.echo(
                f"verified {scrub.get('files', 0)} files ({human_bytes(scrub.get('bytes', 0))}) in "
                f"{scrub.get('seconds', 0)}s; {scrub.get('stopped')}"
                + (
                    f" (budget {scrub['budget']}: the next sweep continues)"
                    if scrub.get("stopped") == "budget"
                    else ""
                )
            )
    if result["state"] != "completed":
        click.echo(f"importctl: sweep {run_id} {result['state']}", err=True)
        ctx.exit(EXIT_DAEMON_ERROR)
    ctx.exit(report.exit_status())


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--undo", is_flag=True, help="make forgotten rows missing again")
@click.option("--dry-run", is_flag=True, help="only show which rows, change nothing")
@json_option
@click.pass_context
def forget(ctx: click.Context, path: str, undo: bool, dry_run: bool, as_json: bool) -> None:
    """Settle ghosts: the rows marked missing at PATH (a file, or a folder: every row under it)
    become forgotten. They are never deleted: `find --all` still shows them, while check, gaps
    and status leave them out. A PATH that exists on disk is refused. --undo makes them
    missing again."""
    data = _client(ctx).forget(path, undo, dry_run)
    if as_json:
        emit_json(data)
        return
    for f in data["files"]:
        click.echo(f"{shown(f['path'])}  (missing since {f['missing_since']})")
    n = data["count"]
    rows = f"{n} row{'s' if n != 1 else ''}"
    if dry_run:
        click.echo(f"would mark {rows} {data['status']} (dry run: nothing changed)")
    elif undo:
        click.echo(f"{rows} missing again: importctl check reports them as ghosts")
    else:
        click.echo(
            f"{rows} forgotten: importctl find --all still shows them;"
            " importctl forget --undo brings them back"
        )


def _gap_text(report: GapsReply) -> str:
    """The checklist: completeness, totals per kind, then one block per entity with ☐ items.
    Rendered from the JSON, so text and --json say the same."""
    c = report["completeness"]
    orphans = report.get("orphaned", [])
    left_out = f"; {len(orphans)} orphaned left out" if orphans else ""
    lines = [
        f"Completeness: {c['percent']:.1f}% ({c['satisfied']} of {c['required']} requirements "
        f"satisfied{left_out})"
    ]
    totals = report.get("totals")
    if totals:
        lines.append(
            "Missing: " + ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in totals.items())
        )
    if not report["entities"] and not orphans:
        lines.append("Nothing missing.")
    for entity in report["entities"]:
        lines.append("")
        lines.append(f"{entity['type']} {shown(entity['name'])}")
        for item in entity["missing"]:
            lines.append(f"  ☐ {item['kind']}: {shown(str(item['name']))}")
    if orphans:
        lines.append("")
        lines.append(f"Orphaned ({len(orphans)}): every file gone, left out of completeness")
        for orphan in orphans:
            lines.append(
                f"  {orphan['type']} {shown(orphan['name'])}: all files gone since {orphan['since']}"
            )
            where = shlex.quote(shown(orphan["path"])) if "path" in orphan else "FOLDER"
            lines.append(f"    restore them, or settle it: importctl forget {where}")
    return "\n".join(lines)


@cli.command()
@click.option("--entity", "entity", default=None, help="only this entity (name, case/accents aside)")
@click.option("--type", "entity_type", default=None, help="only entities of this type")
@click.option("--run", "run_id", type=int, default=None, help="the report stored with a finished run")
@click.option("--follow", is_flag=True, help="redraw as gaps open and close (Ctrl-C to stop)")
@click.option(
    "--recompute", is_flag=True, hidden=True, help="recompute from the catalog (checks the live report)"
)
@click.option(
    "--site", is_flag=True, help="the files of every server sharing the catalog, not only this one's"
)
@json_option
@click.pass_context
def gaps(
    ctx: click.Context,
    entity: str | None,
    entity_type: str | None,
    run_id: int | None,
    follow: bool,
    recompute: bool,
    site: bool,
    as_json: bool,
) -> None:
    """What each entity is still missing: a checklist to work through."""
    client = _client(ctx)

    def show() -> None:
        report = client.gaps(entity, entity_type, run_id, recompute, site)
        if as_json:
            click.echo(json.dumps(report, ensure_ascii=True))
        else:
            if follow and sys.stdout.isatty():
                click.clear()
            click.echo(_gap_text(report))

    if not follow:
        report = client.gaps(entity, entity_type, run_id, recompute, site)
        if as_json:
            emit_json(report)
        else:
            click.echo(_gap_text(report))
        return
    with client.events(("gaps",)) as events:
        show()
        while True:
            if events.next_event(timeout=5.0) is not None:
                show()


@cli.command()
@click.argument("root", required=False)
@click.option(
    "--limit", type=click.IntRange(1, MAX_UNMATCHED_LIMIT), default=DEFAULT_UNMATCHED_LIMIT, show_default=True
)
@json_option
@click.pass_context
def unmatched(ctx: click.Context, root: str | None, limit: int, as_json: bool) -> None:
    """Files no rule maps (kept, just not linked to an entity), counted by folder."""
    data = _client(ctx).unmatched(root, limit)
    if as_json:
        emit_json(data)
        return
    click.echo(f"{data['total']} unmatched file(s)")
    if data["by_folder"]:
        click.echo("by folder:")
        for folder, n in data["by_folder"].items():
            click.echo(f"  {n:>7}  {shown(folder)}")
    for f in data["files"]:
        click.echo(shown(f["path"]))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="also the resolved ones")
@json_option
@click.pass_context
def conflicts(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Metadata values that differ from what an entity already holds (never applied silently)."""
    rows = _client(ctx).conflicts("all" if show_all else "open")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no open conflicts")
    for r in rows:
        status = f" [{r['status']}]" if r["status"] != "open" else ""
        if r["kind"] == "merge":
            click.echo(
                f"#{r['id']} {r['type']} {shown(r['entity'])}: every file moved to {shown(r['source'])}, "
                f"the folder of {shown(r['other'] or '?')}: merge them?{status}"
            )
            continue
        click.echo(
            f"#{r['id']} {r['type']} {shown(r['entity'])}: {r['attribute']} is {json.dumps(r['current'])}, "
            f"{shown(r['source'])} says {json.dumps(r['proposed'])}{status}"
        )
    if rows and not show_all:
        click.echo(
            "settle with: importctl resolve ID --keep | --take-new (values), --merge | --keep-apart (merges)",
            err=True,
        )


@cli.command()
@click.argument("conflict_id", type=int)
@click.option("--keep", "action", flag_value="keep", help="keep the entity's current value")
@click.option("--take-new", "action", flag_value="take_new", help="take the value from the metadata file")
@click.option("--merge", "action", flag_value="merge", help="merge the two entities (a merge proposal)")
@click.option("--keep-apart", "action", flag_value="keep_apart", help="keep the two entities apart")
@json_option
@click.pass_context
def resolve(ctx: click.Context, conflict_id: int, action: str | None, as_json: bool) -> None:
    """Settle conflict CONFLICT_ID (see importctl conflicts)."""
    if action is None:
        raise click.UsageError("say --keep or --take-new (a value), --merge or --keep-apart (a merge)")
    data = _client(ctx).resolve(conflict_id, action)
    if as_json:
        emit_json(data)
    elif data["status"] == "merged":
        click.echo(f"#{conflict_id} {shown(data['entity'])} merged into {shown(str(data['value']))}")
    elif data["status"] == "kept_apart":
        click.echo(f"#{conflict_id} {shown(data['entity'])} kept apart from {shown(str(data['value']))}")
    else:
        click.echo(
            f"#{conflict_id} {shown(data['entity'])}: {data['attribute']} = "
            f"{json.dumps(data['value'])} ({data['status']})"
        )


@cli.command()
@click.option("--type", "entity_type", default=None, help="only entities of this type")
@json_option
@click.pass_context
def entities(ctx: click.Context, entity_type: str | None, as_json: bool) -> None:
    """Every entity, with its files, missing items and open conflicts."""
    rows = _client(ctx).entities(entity_type)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no entities")
        return
    click.echo(f"{'id':>6}  {'type':<12} {'files':>6} {'present':>7} {'missing':>7} {'conflicts':>9}  name")
    for e in rows:
        flag = "  (orphaned: every file gone)" if e["orphaned"] else ""
        click.echo(
            f"{e['id']:>6}  {e['type']:<12} {e['files']:>6} {e['present']:>7} {e['missing']:>7} "
            f"{e['conflicts']:>9}  {shown(e['name'])}{flag}"
        )


@cli.command()
@click.argument("entity_spec", metavar="ENTITY")
@json_option
@click.pass_context
def entity(ctx: click.Context, entity_spec: str, as_json: bool) -> None:
    """One entity's page: attributes with their sources, files by role, tags, missing items and
    open conflicts. ENTITY is TYPE:NAME, a NAME unique across types, or a numeric id."""
    e = _client(ctx).entity(entity_spec)
    if as_json:
        emit_json(e)
        return
    click.echo(f"{e['type']} {shown(e['name'])}  (#{e['id']}, key {shown(e['key'])})")
    click.echo(f"first seen {e['first_seen']}, updated {e['updated']}")
    if e["orphaned_since"]:
        click.echo(f"orphaned: all files gone since {e['orphaned_since']}")
    click.echo("attributes:" if e["attributes"] else "attributes: none")
    for name, attr in e["attributes"].items():
        origin = (
            f"{attr['source']}: {shown(attr['detail'] or '')}, {attr['at']}"
            if attr["source"]
            else "source unknown"
        )
        click.echo(f"  {shown(name)} = {json.dumps(attr['value'], ensure_ascii=False)}    ({origin})")
    click.echo("files:" if e["files"] else "files: none")
    for f in e["files"]:
        click.echo(f"  {f['role'] or '-':<14} {f['status']:<9} {shown(f['path'])}")
    if e["tags"]:
        click.echo("tags: " + ", ".join(shown(t["name"]) for t in e["tags"]))
    if e["missing"]:
        click.echo("missing:")
        for item in e["missing"]:
            click.echo(f"  ☐ {item['kind']}: {shown(str(item['name']))}")
    if e["conflicts"]:
        ids = ", ".join(f"#{c}" for c in e["conflicts"])
        click.echo(f"open conflicts: {ids} (importctl conflicts; importctl resolve ID ...)")


@cli.command()
@click.argument("target", metavar="ROOT|PATH")
@click.option("--rules", "rules", default=None, help="a shipped rule set's name, or a rule set file (TOML)")
@click.option(
    "--limit", type=click.IntRange(1, MAX_PREVIEW_LIMIT), default=DEFAULT_PREVIEW_LIMIT, show_default=True
)
@json_option
@click.pass_context
def preview(ctx: click.Context, target: str, rules: str | None, limit: int, as_json: bool) -> None:
    """What a rule set would make of a root or folder now: entities created, updated or left
    unchanged, files per role, unmatched files, and the gap report that would result. Nothing
    is written. Without --rules, the root's own rules."""
    rules_file: tuple[str, str] | None = None
    if rules is not None and ("/" in rules or rules.endswith(".toml") or os.path.isfile(rules)):
        try:
            with open(rules, encoding="utf-8") as fh:
                rules_file = (os.path.basename(rules), fh.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {rules}: {exc}", param_hint="--rules") from None
        rules = None
    if os.path.exists(target) and not os.path.isabs(target):
        target = os.path.abspath(target)
    data = _client(ctx).preview(target, rules, rules_file, limit)
    if as_json:
        emit_json(data)
        return
    t = data["totals"]
    click.echo(f"preview of {shown(data['target'])} with rules {shown(data['rules'])}: nothing written")
    click.echo(
        f"files: {data['files']}, mapped {data['mapped']} ({data['mapped_percent']:.1f}%), "
        f"unmatched {t['unmatched']}"
    )
    if data["roles"]:
        click.echo("roles: " + ", ".join(f"{role} {n}" for role, n in data["roles"].items()))
    click.echo(f"entities: {t['create']} to create, {t['update']} to update, {t['unchanged']} unchanged")
    for row in data["rows"]:
        if row["action"] == "unchanged" or row["entity"] is None:
            continue
        files = f"+{row['new_files']} file{'s' if row['new_files'] != 1 else ''}"
        click.echo(f"  {row['action']:<8} {row['entity']['type']} {shown(row['entity']['name'])}  ({files})")
        for c in row["changes"]:
            if c["conflict"]:
                click.echo(
                    f"      {c['field']}: keeps {json.dumps(c['current'])}, the tree says "
                    f"{json.dumps(c['proposed'])} (would be a conflict)"
                )
            else:
                click.echo(f"      {c['field']}: {json.dumps(c['current'])} → {json.dumps(c['proposed'])}")
        for err in row["errors"]:
            click.echo(f"      ! {shown(err['message'])}")
    if len(data["rows"]) < data["rows_total"]:
        click.echo(f"  … {data['rows_total'] - len(data['rows'])} more (--limit, or --json)")
    if data["unmatched_by_folder"]:
        click.echo("unmatched files by folder:")
        for folder, n in list(data["unmatched_by_folder"].items())[:20]:
            click.echo(f"  {n:>7}  {shown(folder)}")
    click.echo("")
    click.echo("gaps that would result:")
    click.echo(_gap_text(data["gaps"]))


@cli.command()
@click.option(
    "--limit", type=click.IntRange(1, MAX_RUNS_LIMIT), default=DEFAULT_RUNS_LIMIT, show_default=True
)
@json_option
@click.pass_context
def runs(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent reconcile/import runs, newest first."""
    rows = _client(ctx).runs(limit)
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        c = r["counts"]
        click.echo(
            f"{r['id']:>5} {r['status']:<10} {r['root'] or '-':<12} {r['trigger']:<15} {r['started']}  "
            f"seen {c['files_seen']}, registered {c['files_registered']}, entities +{c['entities_created']}"
            f"/~{c['entities_updated']}, dup {c['duplicates']}, err {c['errors']}"
        )


@cli.command(name="run")
@click.argument("run_id", type=int)
@json_option
@click.pass_context
def run_cmd(ctx: click.Context, run_id: int, as_json: bool) -> None:
    """One run: its counts and its per-entity log."""
    data = _client(ctx).run(run_id)
    if as_json:
        emit_json(data)
        return
    click.echo(
        f"run {data['id']}: {data['status']} ({data['trigger']}, {data['root']}) "
        f"{data['started']} -> {data['finished']}"
    )
    for k, v in data["counts"].items():
        click.echo(f"  {k:<17} {v}")
    for entry in data["log"]:
        click.echo(
            f"  {entry['action']:<9} {shown(entry['entity'] or '-'):<24} {shown(entry['detail'] or '')}"
        )


@cli.command()
@click.argument("run_id", type=int)
@json_option
@click.pass_context
def cancel(ctx: click.Context, run_id: int, as_json: bool) -> None:
    """Cancel a running (or queued) run."""
    data = _client(ctx).cancel(run_id)
    if as_json:
        emit_json(data)
    else:
        click.echo(f"run {run_id} cancelled")


@cli.command("confirm-missing")
@click.argument("root")
@json_option
@click.pass_context
def confirm_missing(ctx: click.Context, root: str, as_json: bool) -> None:
    """Apply a held mass disappearance: ROOT's held files become missing (since they vanished)."""
    data = _client(ctx).confirm_missing(root)
    if as_json:
        emit_json(data)
    else:
        click.echo(f"{data['root']}: {data['confirmed']} files marked missing")


@cli.command()
@click.option("--topic", "topics", multiple=True, help="only these topics (run, files, gaps)")
@click.option("--count", type=int, default=0, help="stop after this many events")
@click.option("--timeout", "idle", type=float, default=0.0, help="stop after this many idle seconds")
@json_option
@click.pass_context
def watch(ctx: click.Context, topics: tuple[str, ...], count: int, idle: float, as_json: bool) -> None:
    """Stream the daemon's live events (one line each; --json for JSON lines)."""
    seen = 0
    with _client(ctx).events(topics) as events:
        while count == 0 or seen < count:
            event = events.next_event(timeout=idle or 3600.0)
            if event is None:
                if idle:
                    return
                continue
            seen += 1
            if as_json:
                click.echo(json.dumps(event, ensure_ascii=True))
            else:
                click.echo(_event_line(event))


@cli.command("migrate-legacy")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option(
    "--mapping", "mapping", required=True, type=click.Path(dir_okay=False), help="the mapping (TOML)"
)
@click.option("--commit", is_flag=True, help="apply it (without: a preview, nothing written)")
@click.option(
    "--limit",
    type=click.IntRange(0, MAX_LEGACY_ROWS_LIMIT),
    default=DEFAULT_LEGACY_ROWS_LIMIT,
    show_default=True,
    help="rows listed (the totals count them all)",
)
@json_option
@click.pass_context
def migrate_legacy(
    ctx: click.Context, db: str, mapping: str, commit: bool, limit: int, as_json: bool
) -> None:
    """Bring a legacy catalog (SQLite) in through a MAPPING: a preview, or with --commit a run."""
    data = _client(ctx).migrate_legacy(db, mapping, commit, limit)
    if as_json:
        emit_json(data)
    else:
        for r in data["rows"]:
            if r["action"] == "link":
                continue
            why = r["detail"] or "; ".join(f"{e['column']}: {e['message']}" for e in r["errors"])
            where = shown(r["path"]) if r["path"] else "-"
            click.echo(f"{r['action']:<8} row {r['key']}: {where}" + (f" ({why})" if why else ""))
        t = data["totals"]
        counts = ", ".join(f"{n} {k}" for k, n in t.items() if k != "rows")
        verb = f"committed as run {data['run_id']}" if data["committed"] else "preview, nothing written"
        click.echo(f"{t['rows']} rows: {counts} ({verb})")
        if data["more"]:
            click.echo(f"({data['more']} rows not listed; --limit N lists more)")
    if data["totals"]["invalid"]:
        ctx.exit(EXIT_DAEMON_ERROR)


@cli.command()
@click.argument("what", type=click.Choice(PAUSABLE))
@json_option
@click.pass_context
def pause(ctx: click.Context, what: str, as_json: bool) -> None:
    """Pause the legacy catalog's background hashing backlog (kept across restarts)."""
    data = _client(ctx).pause(what)
    emit_json(data) if as_json else click.echo(_migration_line(data["migration"]))


@cli.command()
@click.argument("what", type=click.Choice(PAUSABLE))
@json_option
@click.pass_context
def resume(ctx: click.Context, what: str, as_json: bool) -> None:
    """Resume the legacy catalog's background hashing backlog."""
    data = _client(ctx).resume(what)
    emit_json(data) if as_json else click.echo(_migration_line(data["migration"]))


@cli.command()
@json_option
@click.pass_context
def tags(ctx: click.Context, as_json: bool) -> None:
    """Every tag with its colour and how many files and entities carry it."""
    rows = _client(ctx).tags()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no tags")
    for t in rows:
        color = f" ({t['color']})" if t["color"] else ""
        click.echo(f"{t['name']}{color}: {t['files']} files, {t['entities']} entities")


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="write the dump to FILE (default: stdout)",
)
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="jsonl", show_default=True)
@json_option
@click.pass_context
def export(ctx: click.Context, out: Path | None, fmt: str, as_json: bool) -> None:
    """The whole catalog as a dump (one JSON object a line; `importd import-dump` restores it)."""
    if as_json and out is None:
        raise click.UsageError("--json needs --out (the dump itself goes to stdout without it)")
    client = _client(ctx)
    started = client.export(fmt)
    try:
        result = write_export(client.pull(started["stream"]), out, fmt)
    except TransferError as exc:
        raise ClientError(str(exc)) from None
    if as_json:
        emit_json(result)
    elif out is not None:
        total = sum(result["rows"].values())
        click.echo(
            f"exported {total} rows of {sum(1 for n in result['rows'].values() if n)} tables "
            f"({human_bytes(result['bytes'])}, schema {result['revision']}) to {out} "
            f"in {result['seconds']:.1f}s"
        )


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="the copy of the catalog file (a SQLite database)",
)
@json_option
@click.pass_context
def backup(ctx: click.Context, out: Path, as_json: bool) -> None:
    """A consistent copy of a SQLite catalog, taken while importd runs (checked before it is kept)."""
    if out.exists():
        raise ClientError(f"{out} exists; choose a new name (a backup never overwrites)")
    client = _client(ctx)
    started = client.backup()
    live = sys.stderr.isatty() and not as_json

    def progress(piece: Any) -> None:
        p = piece["progress"]
        if live and p["total"]:
            click.echo(f"\rcopying: {p['done']}/{p['total']} pages", nl=False, err=True)

    try:
        result = write_backup(client.pull(started["stream"]), out, progress)
    except TransferError as exc:
        raise ClientError(str(exc)) from None
    finally:
        if live:
            click.echo("", err=True)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"backed up the catalog to {out}: {human_bytes(result['bytes'])}, {result['pages']} pages "
            f"in {result['steps']} steps, integrity ok, {result['seconds']:.1f}s"
        )


def _event_line(event: Event) -> str:
    topic = event.get("topic")
    if topic == Topic.RUN:
        data = cast(ScanReply, event.get("data", {}))
        return (
            f"run {data.get('run_id')} {data.get('root')}: {data.get('state')} "
            f"({data.get('files_seen')} seen, {data.get('changed')} changed, {data.get('pending')} pending)"
        )
    if topic == Topic.FILES:
        files = cast(FilesEvent, event.get("data", {}))
        counts = ", ".join(f"{n} {k}" for k, n in files.get("counts", {}).items())
        return f"files: {counts}"
    if topic == Topic.GAPS:
        report = cast(GapsEvent, event.get("data", {}))
        c = report.get("completeness", {})
        names = ", ".join(shown(e["name"]) for e in report.get("changed", [])[:5])
        renamed = "".join(f"; {shown(r['old'])} is now {shown(r['new'])}" for r in report.get("renamed", []))
        return f"gaps: completeness {c.get('percent')}% ({names}){renamed}"
    return json.dumps(event, ensure_ascii=True)


@cli.command()
@click.argument("root", required=False)
@json_option
@click.pass_context
def drift(ctx: click.Context, root: str | None, as_json: bool) -> None:
    """Where sidecars, NFO files and metadata.json disagree with the catalog (of ROOT, a root's name
    or path, or of every root): a value that differs (the file newer or older than the catalog's
    value), or a value whose file is gone; one line each, with what would settle it."""
    data = _client(ctx).drift(os.path.abspath(root) if root and os.path.isdir(root) else root)
    if as_json:
        emit_json(data)
        return
    if not data["items"] and not data["unreadable"]:
        click.echo("no drift: every sidecar agrees with the catalog")
    for item in data["items"]:
        e = item["entity"]
        where = f"{e['type']} {shown(e['name'])}: {shown(item['attribute'])}"
        held = json.dumps(item["catalog"], ensure_ascii=False)
        if item["kind"] == "gone":
            line = f"gone     {where} = {held}, from {shown(item['path'])}, which is missing"
        else:
            said = json.dumps(item["sidecar"], ensure_ascii=False)
            line = f"{item['kind']:<8} {where}: {shown(item['path'])} says {said}, the catalog holds {held}"
        click.echo(line)
        click.echo(f"         settle: {item['settle']}")
    for bad in data["unreadable"]:
        click.echo(f"unreadable {shown(bad['path'])}: {bad['reason']}")
    if data["items"]:
        totals = ", ".join(f"{n} {k}" for k, n in data["totals"].items() if n)
        click.echo(f"{len(data['items'])} disagreement(s): {totals}")


@cli.command()
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="the page to write (one self-contained file)",
)
@click.option("--root", default=None, help="only this root (its files, entities and findings)")
@click.option(
    "--groups",
    type=click.IntRange(1, MAX_REPORT_GROUPS),
    default=DEFAULT_REPORT_GROUPS,
    show_default=True,
    help="duplicate groups drawn per kind; the rest are counted",
)
@json_option
@click.pass_context
def report(ctx: click.Context, html_file: Path, root: str | None, groups: int, as_json: bool) -> None:
    """Write the catalog as one HTML page to look at: roots, completeness and the gap checklist,
    duplicate groups side by side with thumbnails and a suggested keeper, and the last sweep's
    findings with their fixes. Self-contained: it loads nothing from anywhere."""
    data = _client(ctx).report(root, groups)
    page = data["html"].encode("utf-8", "surrogateescape")
    target = html_file.resolve()
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        partial.write_bytes(page)
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise click.FileError(str(html_file), hint=exc.strerror or str(exc)) from None
    summary = {
        "path": str(target),
        "bytes": len(page),
        "root": data["root"],
        "generated": data["generated"],
        "seconds": data["seconds"],
        "sections": data["sections"],
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {shown(str(target))} ({human_bytes(len(page))}) in {data['seconds']:.1f}s")
    for name, section in data["sections"].items():
        left = section["total"] - section["shown"]
        more = f" ({left:,} more counted, not drawn)" if left > 0 and name not in ("completeness",) else ""
        click.echo(f"  {name.replace('_', ' '):<18} {section['shown']:>7,} of {section['total']:,}{more}")


def _warn_on_version_mismatch(ctx: click.Context | None) -> None:
    obj = ctx.find_object(Context) if ctx is not None else None
    if obj is None or obj.versions_shown:
        return
    daemon = obj.client.daemon_version
    if daemon and daemon != __version__:
        click.echo(
            f"importctl: warning: importctl {__version__} talks to importd {daemon}; "
            "upgrade both together (the --json shapes may differ)",
            err=True,
        )


@cli.command("import-csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD", help="a column as a field (repeat)")
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a TOML mapping: type, key and [columns] (--map, --type, --key win over it)",
)
@click.option(
    "--key",
    "key_mode",
    type=click.Choice(IMPORT_KEY_MODES),
    default=None,
    help="how rows find entities [default: name]",
)
@click.option("--type", "entity_type", default=None, help="the entity type of every row")
@click.option("--create", is_flag=True, help="create an entity for a row that matches none")
@click.option("--overwrite", is_flag=True, help="replace differing values (otherwise: conflicts)")
@click.option("--commit", is_flag=True, help="write it (as a run); without it, a preview")
@click.option(
    "--limit",
    type=click.IntRange(0, MAX_IMPORT_ROWS_LIMIT),
    default=DEFAULT_IMPORT_ROWS_LIMIT,
    show_default=True,
    help="rows listed (the totals count every row)",
)
@json_option
@click.pass_context
def import_csv(
    ctx: click.Context,
    file: Path,
    maps: tuple[str, ...],
    mapping: Path | None,
    key_mode: str | None,
    entity_type: str | None,
    create: bool,
    overwrite: bool,
    commit: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Bring a spreadsheet's rows in as entity attributes: a preview, or with --commit a run.

    Exit status 1 when a row is invalid (nothing of it is written; the other rows are)."""
    from importctl.csv_mapping import CsvMapping, MappingFileError, load_mapping, parse_map_option

    try:
        spec = load_mapping(mapping) if mapping else CsvMapping()
        for text in maps:
            spec.with_option(*parse_map_option(text))
    except MappingFileError as exc:
        raise click.UsageError(str(exc)) from None
    etype = entity_type or spec.entity_type
    if not etype:
        raise click.UsageError('say the entity type: --type T (or type = "T" in the --mapping file)')
    if not spec.columns:
        raise click.UsageError("map the columns: --map COLUMN=FIELD ... (or [columns] in a --mapping file)")
    client = _client(ctx)
    call = functools.partial(
        client.import_csv,
        os.path.abspath(file),
        etype,
        key_mode or spec.key or "name",
        spec.columns,
        create=create,
        overwrite=overwrite,
        commit=commit,
        limit=limit,
    )
    reply = _with_progress(client, call) if sys.stderr.isatty() and not as_json else call()
    for warning in reply["warnings"]:
        click.echo(f"importctl: warning: {shown(reply['file'])}: {warning}", err=True)
    if as_json:
        emit_json(reply)
    else:
        _print_import(reply)
    if reply["totals"]["invalid"]:
        ctx.exit(EXIT_DAEMON_ERROR)


def _with_progress(client: Client, call: Callable[..., CsvImportReply]) -> CsvImportReply:
    """Run the import in a thread; show how many rows the daemon has read meanwhile."""
    job = uuid.uuid4().hex
    done: list[CsvImportReply] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            done.append(call(job=job))
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    shown_once = False
    while worker.is_alive():
        worker.join(0.5)
        if not worker.is_alive():
            break
        try:
            progress = client.import_progress(job)
        except ClientError:
            continue
        if progress["state"] == "running":
            click.echo(f"\rimport-csv: {progress['rows']:>9} rows read", nl=False, err=True)
            shown_once = True
    if shown_once:
        click.echo("", err=True)
    if failed:
        raise failed[0]
    return done[0]


def _print_import(reply: CsvImportReply) -> None:
    what = f"run {reply['run_id']}, committed" if reply["committed"] else "preview, nothing written"
    delimiter = _DELIMITER_NAMES.get(reply["delimiter"], reply["delimiter"])
    click.echo(f"{shown(reply['file'])} ({reply['encoding']}, {delimiter}): {what}")
    for row in reply["rows"]:
        if row["action"] == "unchanged":
            continue
        entity = row["entity"]
        who = shown(entity["name"]) if entity else shown(row["key"])
        click.echo(f"  row {row['row']:>6}  {row['action']:<9}  {who}")
        for change in row["changes"]:
            current, proposed = change["current"], change["proposed"]
            kept = row["action"] == "conflict" and current is not None
            note = "   (kept: a conflict; --overwrite replaces it)" if kept else ""
            click.echo(f"      {shown(change['field'])}: {_value(current)} → {_value(proposed)}{note}")
        for error in row["errors"]:
            where = f"{shown(error['column'])}: " if error["column"] else ""
            click.echo(f"      ✗ {where}{error['message']}")
        if row["action"] == "unmatched":
            click.echo("      no such entity (--create makes one)")
    t = reply["totals"]
    click.echo(
        f"totals: {t['create']} create, {t['update']} update, {t['unchanged']} unchanged, "
        f"{t['invalid']} invalid, {t['conflict']} conflict, {t['unmatched']} unmatched"
    )
    left = sum(t.values()) - len(reply["rows"])  # type: ignore[arg-type]
    if left > 0:
        click.echo(f"({left} more rows not listed: --limit N, or --json)")
    if reply["committed"] and t["conflict"]:
        click.echo("differing values are open conflicts: importctl conflicts; importctl resolve ID ...")
    if reply["run_id"] is not None:
        click.echo(f"see: importctl run {reply['run_id']}")


_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


def _value(value: object) -> str:
    return "–" if value is None else json.dumps(value, ensure_ascii=False)


@cli.command()
@click.option(
    "--entity",
    "entity",
    default=None,
    metavar="ENTITY",
    help="only this entity (asked again even if settled)",
)
@click.option("--type", "entity_type", default=None, help="only entities of this type")
@click.option("--all", "every", is_flag=True, help="every entity of the enriched types")
@click.option("--dry-run", is_flag=True, help="ask and score, write nothing")
@click.option("--no-wait", is_flag=True, help="queue the run and return")
@json_option
@click.pass_context
def enrich(
    ctx: click.Context,
    entity: str | None,
    entity_type: str | None,
    every: bool,
    dry_run: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Ask the metadata provider ([enrich]) about films and series; apply confident matches.

    Entities settled before and unchanged since are not asked again (--entity asks anyway).
    Exit status 1 when the run failed."""
    if sum(1 for x in (entity, entity_type, every) if x) != 1:
        raise click.UsageError("say what to enrich: --entity NAME, --type T or --all")
    client = _client(ctx)
    reply = client.enrich(entity=entity, entity_type=entity_type, every=every, dry_run=dry_run)
    tty = sys.stderr.isatty() and not as_json
    while not no_wait and reply["state"] in ("queued", "running"):
        time.sleep(0.2)
        reply = client.enrich_progress(reply["job"])
        if tty:
            c = reply["counts"]
            click.echo(
                f"\renrich: {reply['state']:<9} {c['considered']:>6} asked {c['matched']:>6} matched "
                f"{c['pending']:>5} pending {c['skipped']:>5} skipped {c['requests']:>6} requests",
                nl=False,
                err=True,
            )
    if tty and not no_wait:
        click.echo("", err=True)
    if as_json:
        emit_json(reply)
    else:
        _print_enrich(reply)
    if reply["state"] == "failed":
        ctx.exit(EXIT_DAEMON_ERROR)


def _print_enrich(reply: EnrichReply) -> None:
    what = "dry run, nothing written" if reply["dry_run"] else f"run {reply['run_id']}"
    click.echo(
        f"enrich {reply['selection']}: {what}: {reply['state']}"
        + (f" ({reply['message']})" if reply["message"] else "")
    )
    if reply["state"] in ("queued", "running"):
        click.echo(f"job {reply['job']}; see: importctl runs")
        return
    for item in reply["items"]:
        conf = f" {item['confidence']:.3f}" if item["confidence"] is not None else ""
        ident = f" #{item['provider_id']}" if item["provider_id"] is not None else ""
        line = f"  {item['outcome']:<8} {shown(item['entity'])}{ident}{conf}"
        if item["applied"]:
            line += f": {', '.join(item['applied'])}"
        elif item["outcome"] != "matched" and item["reason"]:
            line += f": {item['reason']}"
        click.echo(line)
    c = reply["counts"]
    click.echo(
        f"totals: {c['considered']} asked, {c['matched']} matched, {c['pending']} pending, "
        f"{c['none']} no match, {c['skipped']} skipped, {c['unchanged']} unchanged since; "
        f"{c['conflicts']} conflicts; "
        f"{c['requests']} requests, {c['cached']} from the cache"
    )
    if c["pending"]:
        click.echo("to choose: importctl pending; importctl validate ENTITY --pick N")
    if reply["run_id"] is not None:
        click.echo(
            f"see: importctl run {reply['run_id']}; take it back: importctl unapply --run {reply['run_id']}"
        )


@cli.command()
@json_option
@click.pass_context
def pending(ctx: click.Context, as_json: bool) -> None:
    """Entities whose match the provider could not settle alone, with their candidates."""
    rows = _client(ctx).pending()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("nothing pending validation")
        return
    for row in rows:
        click.echo(f"{row['type']}:{shown(row['name'])} (id {row['id']}): {row['reason'] or ''}")
        for c in row["candidates"]:
            original = f" / {c['original_title']}" if c["original_title"] else ""
            year = f" ({c['year']})" if c["year"] else ""
            click.echo(
                f"  {c['n']:>2}. {c['title']}{original}{year}  #{c['provider_id']}  {c['confidence']:.3f}"
            )
    click.echo("settle one: importctl validate ENTITY --pick N | --provider-id ID | --none")


@cli.command()
@click.argument("entity_spec", metavar="ENTITY")
@click.option("--pick", type=click.IntRange(1), default=None, help="candidate N, as `pending` numbers them")
@click.option("--provider-id", type=click.IntRange(1), default=None, help="this record of the provider")
@click.option("--none", "none", is_flag=True, help="no record of the provider is this entity")
@json_option
@click.pass_context
def validate(
    ctx: click.Context, entity_spec: str, pick: int | None, provider_id: int | None, none: bool, as_json: bool
) -> None:
    """Settle an entity's match: apply a candidate or a provider id, or say it has none."""
    if sum(1 for x in (pick is not None, provider_id is not None, none) if x) != 1:
        raise click.UsageError("say one of --pick N, --provider-id ID or --none")
    reply = _client(ctx).validate(entity_spec, pick=pick, provider_id=provider_id, none=none)
    if as_json:
        emit_json(reply)
        return
    if reply["state"] == "none":
        click.echo(f"{shown(reply['entity'])}: no match (not asked again until it changes)")
        return
    applied = ", ".join(reply["applied"]) or "nothing new"
    click.echo(f"{shown(reply['entity'])}: matched #{reply['provider_id']}: applied {applied}")
    if reply["conflicts"]:
        click.echo(f"{reply['conflicts']} differing value(s) are open conflicts: importctl conflicts")


@cli.command()
@click.argument("entity_spec", metavar="ENTITY", required=False)
@click.option("--run", "run_id", type=int, default=None, help="everything this enrichment run applied")
@json_option
@click.pass_context
def unapply(ctx: click.Context, entity_spec: str | None, run_id: int | None, as_json: bool) -> None:
    """Take back what a match (ENTITY) or a run (--run ID) applied: the previous values return."""
    if (entity_spec is None) == (run_id is None):
        raise click.UsageError("say one of ENTITY or --run ID")
    reply = _client(ctx).unapply(entity_spec, run_id)
    if as_json:
        emit_json(reply)
        return
    for v in reply["values"]:
        state = "restored" if v["restored"] else f"left ({v['why']})"
        click.echo(f"  {shown(v['entity'])}: {shown(v['attribute'])} {state}: {_value(v['value'])}")
    click.echo(
        f"{reply['restored']} value(s) restored, {reply['left']} left, "
        f"{reply['conflicts_withdrawn']} conflict(s) withdrawn"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; maps client errors to one stderr line and an exit code."""
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:
        # What click's own `main` does first: answer the shell (or print its script) and stop.
        return shell_complete(cli, {}, PROG_NAME, COMPLETE_VAR, instruction)
    try:
        with cli.make_context(PROG_NAME, list(sys.argv[1:] if argv is None else argv)) as ctx:
            try:
                cli.invoke(ctx)
            finally:
                _warn_on_version_mismatch(ctx)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("importctl: interrupted", err=True)
        return 130
    except DaemonUnreachable as exc:
        click.echo(f"importctl: {exc}", err=True)
        return EXIT_UNREACHABLE
    except DaemonError as exc:
        hint = {
            "not_found": " (hint: importctl scan PATH, if it was added while importd was not looking)",
            "busy": " (hint: retry in a moment)",
            "internal": " (hint: journalctl -u importd)",
        }.get(exc.code.value, "")
        if "(hint: " in exc.message or "`importctl " in exc.message:
            hint = ""  # the daemon's own hint, or the command it names, fits better
        click.echo(f"importctl: {exc.code.value}: {exc.message}{hint}", err=True)
        return EXIT_DAEMON_ERROR
    except ClientError as exc:
        click.echo(f"importctl: {exc}", err=True)
        return EXIT_DAEMON_ERROR
    except BrokenPipeError:
        # `importctl find … | head`: the reader left; say nothing.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        click.echo("importctl: interrupted", err=True)
        return 130
    return 0
