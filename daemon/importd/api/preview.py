"""`preview`: what a rule set would make of a root or a folder now, with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import anyio

from importctl.protocol import (
    DEFAULT_PREVIEW_LIMIT,
    MAX_PREVIEW_LIMIT,
    ErrorCode,
    GapsReply,
    PreviewReply,
    PreviewRow,
)
from importd.api.files import target_error
from importd.api.server import ApiError, Params
from importd.catalog.entity_views import entities_by_keys
from importd.core import Core
from importd.entities import RuleError, RuleSet, load_rule_set, parse_rule_set_file
from importd.entities.preview import PreviewTree, judge, map_paths, read_into, resulting_report
from importd.paths import display
from importd.pipeline.mapper import read_metadata_file
from importd.pipeline.reconcile import walk_listings
from importd.targets import Place, TargetError


async def preview(core: Core, params: Params) -> PreviewReply:
    target = params["target"]
    roots = core.roots()
    named = next((r for r in roots if r.name == target), None)
    place: Place | TargetError
    place = Place(named.root_id, b"", named.raw_path) if named else core.locate(target, params.get("cwd"))
    if isinstance(place, TargetError):
        raise target_error(place)
    setup = core.root_setup(place.root_id)
    root = next((r for r in roots if r.root_id == place.root_id), None)
    if setup is None or root is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"{target}: its root was removed meanwhile")
    ignore, configured, expectations = setup
    rule_set, rules_name = _rule_set(params, configured, root.name)
    limit = max(1, min(int(params.get("limit", DEFAULT_PREVIEW_LIMIT)), MAX_PREVIEW_LIMIT))

    def walk_and_map() -> PreviewTree:
        def relpaths() -> Iterator[bytes]:
            for listing in walk_listings(root.raw_path, place.relpath, ignore):
                files, _ = listing.take()
                for entry in files:
                    yield listing.prefix + entry[0]

        tree = map_paths(relpaths(), rule_set, place.root_id)
        for relpath, mapping in tree.reads:
            content, error = read_metadata_file(root.absolute(relpath))
            read_into(tree, relpath, mapping, content, error)
        return tree

    tree = await anyio.to_thread.run_sync(walk_and_map)
    async with core.engine.connect() as conn:
        held, linked = await conn.run_sync(entities_by_keys, list(tree.entities), place.root_id)
    judged = judge(tree, held, lambda key: linked.get(key, set()))
    report = resulting_report(judged, held, expectations)
    totals = {"create": 0, "update": 0, "unchanged": 0, "unmatched": tree.files - tree.mapped}
    rows: list[PreviewRow] = []
    for number, j in enumerate(judged, 1):
        totals[j.action] += 1
        if len(rows) < limit:
            e = j.entity
            rows.append(
                {
                    "row": number,
                    "key": e.key,
                    "action": j.action,
                    "entity": {"type": e.type, "name": e.name},
                    "changes": [
                        {
                            "field": c.field,
                            "current": c.current,
                            "proposed": c.proposed,
                            "conflict": c.conflict,
                        }
                        for c in j.changes
                    ],
                    "errors": [{"column": None, "message": message} for message in e.errors],
                    "files": dict(sorted(e.roles.items())),
                    "new_files": j.new_files,
                }
            )
    gaps = cast(GapsReply, report.to_json())
    return {
        "run_id": None,
        "committed": False,
        "target": display(root.absolute(place.relpath)),
        "rules": rules_name,
        "totals": totals,
        "rows": rows,
        "rows_total": len(judged),
        "files": tree.files,
        "mapped": tree.mapped,
        "mapped_percent": (tree.mapped * 1000 // tree.files) / 10 if tree.files else 100.0,
        "roles": dict(sorted(tree.roles.items())),
        "unmatched_by_folder": dict(sorted(tree.unmatched_by_folder.items(), key=lambda kv: (-kv[1], kv[0]))),
        "gaps": gaps,
    }


def _rule_set(params: Params, configured: RuleSet | None, root_name: str) -> tuple[RuleSet, str]:
    """The rule set asked for (a shipped set's name, or a rule file's content), else the root's."""
    try:
        if params.get("rules_file") is not None:
            name = str(params.get("rules_name") or "file")
            return parse_rule_set_file(str(params["rules_file"]).encode(), name), name
        if params.get("rules"):
            return load_rule_set(params["rules"]), params["rules"]
    except RuleError as exc:
        raise ApiError(ErrorCode.INVALID, f"{exc} (hint: importctl preview ... --rules NAME|FILE)") from None
    if configured is None:
        raise ApiError(
            ErrorCode.INVALID,
            f"root {root_name} has no rules (hint: give one with --rules NAME|FILE, e.g. --rules characters)",
        )
    return configured, configured.name or f"the rules of root {root_name}"
