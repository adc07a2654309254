"""How much of a tree a rule set maps, and which files it leaves out.

`unmatched` listings group the leftover files by folder, so a folder full of unmatched files
(a missing rule) stands out from a few strays. The JSON form is what `importctl unmatched
--json` returns: `{"files": [{"path"}], "by_folder": {folder: count}}`, folders with the most
unmatched files first; files at the root are in folder ".".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from importd.entities.rules import RuleSet

__all__ = ["RuleCoverage", "measure_coverage", "unmatched_json"]


@dataclass(frozen=True)
class RuleCoverage:
    rule_set: str
    total: int
    mapped: int
    unmatched: tuple[str, ...]  # sorted
    per_rule: tuple[int, ...]  # files mapped by each rule, in rule order (a 0 is a dead rule)

    @property
    def share(self) -> float:
        """Mapped files / all files (1.0 for an empty tree)."""
        return self.mapped / self.total if self.total else 1.0

    def to_json(self) -> dict[str, Any]:
        return unmatched_json(self.unmatched)


def measure_coverage(rule_set: RuleSet, relpaths: Iterable[str]) -> RuleCoverage:
    per_rule = [0] * len(rule_set.rules)
    unmatched: list[str] = []
    total = 0
    for relpath in relpaths:
        total += 1
        mapping = rule_set.map_path(relpath)
        if mapping is None:
            unmatched.append(relpath)
        else:
            per_rule[mapping.rule_index] += 1
    return RuleCoverage(
        rule_set=rule_set.name,
        total=total,
        mapped=total - len(unmatched),
        unmatched=tuple(sorted(unmatched)),
        per_rule=tuple(per_rule),
    )


def unmatched_json(relpaths: Iterable[str]) -> dict[str, Any]:
    files = sorted(relpaths)
    folders = Counter(path.rpartition("/")[0] or "." for path in files)
    by_folder = dict(sorted(folders.items(), key=lambda item: (-item[1], item[0])))
    return {"files": [{"path": path} for path in files], "by_folder": by_folder}
