"""Path-to-entity rules: which entity a file belongs to, and in what role.

A rule set is an ordered list of rules; the first rule whose pattern matches a file's relative
path wins. A rule names the entity type, an entity name template built from the captures
(`name = "{title} ({year})"`), the file's role, and optionally which captures describe the
entity rather than the file (`entity_attributes = ["year"]`). Captures not used in the name
nor listed there become attributes of the file's link (`scene_type`, `ext`, ...).

Numbers: captures declared `{x:int}`, and captures named `season`, `episode` or `year` whose
value is all digits, are handed on as ints ("Saison 01" and "Season 1" are both season 1).
Files with the role `episode` also get `season` and `episode` from their file name
(`S01E02`, `1x02`, see `episodes.py`); a season captured from the folder wins over the name's.

`match_key` says how an entity is found again (see `keys.py`): `name` (default), `path` (the
folder holding the entity) or `id` (the `id` key of the entity's metadata.json; such mappings
carry `key=None` until the caller supplies the id with `PathMapping.with_key(id_key(...))`).

Shipped sets live beside this module in `rulesets/<name>.toml` (package data, so they work
installed); `config/rules/` in the source tree links to them. A set file holds `description`,
optional `match_key`, and `[[rules]]` tables of the same shape as inline `[[roots.rules]]`.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from importd.entities.episodes import parse_episode
from importd.entities.keys import MATCH_KEY_MODES, fold, name_key, path_key
from importd.entities.patterns import Pattern, PatternError, compile_pattern

__all__ = [
    "ROLE_EPISODE",
    "ROLE_METADATA",
    "ROLE_SCENE_VIDEO",
    "ROLE_SIDECAR",
    "ROLE_TABLE",
    "LinkValue",
    "NameTemplate",
    "PathMapping",
    "Rule",
    "RuleError",
    "RuleSet",
    "load_rule_set",
    "parse_rule",
    "parse_rule_set_file",
    "parse_rules",
    "rule_set_for_root",
    "shipped_rule_sets",
]

# Roles with a meaning beyond a label: read as attributes, or numbered.
ROLE_METADATA: Final = "metadata"  # a JSON object whose keys are entity attributes
ROLE_SIDECAR: Final = "sidecar"  # a text file that is the value of the rule's `attribute`
ROLE_TABLE: Final = "table"  # a CSV file, one row per entity (no `name`: rows name entities)
ROLE_EPISODE: Final = "episode"
ROLE_SCENE_VIDEO: Final = "scene_video"

_NUMBERED_CAPTURES: Final = frozenset({"season", "episode", "year"})
_RULE_KEYS: Final = frozenset(
    {"pattern", "entity_type", "name", "role", "match_key", "entity_attributes", "attribute", "pre_approved"}
)
_SET_KEYS: Final = frozenset({"description", "match_key", "rules"})
_SET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_WORD = re.compile(r"[^\s/]+(?: [^\s/]+)*")

LinkValue = str | int
# Most mapped files have no link attribute of their own. The live gap report keeps every linked
# file's attributes for as long as the daemon runs: one shared, read-only empty mapping instead
# of an empty dict each (about 13 MB of 150,000 blocks at a million files, measured).
NO_LINK_ATTRIBUTES: Mapping[str, LinkValue] = MappingProxyType({})


class RuleError(ValueError):
    """A rule that cannot be used; `where` names it (`rules[2] ('{a}{b}')`) for the config error."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class NameTemplate:
    """`{capture}` fields and literal text (`{{`/`}}` for braces), nothing else."""

    source: str
    pieces: tuple[tuple[str, str | None], ...]
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, source: str, captures: Sequence[str]) -> NameTemplate:
        pieces: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise ValueError(f"name {source!r}: {exc}") from None
        for literal, field_name, spec, conversion in parsed:
            if field_name is None:
                pieces.append((literal, None))
                continue
            if spec or conversion or not field_name.isidentifier():
                raise ValueError(f"name {source!r}: write plain {{capture}} fields, not {{{field_name}...}}")
            if field_name not in captures:
                known = ", ".join(captures) or "none"
                raise ValueError(
                    f"name {source!r}: {{{field_name}}} is not a capture of the pattern ({known})"
                )
            pieces.append((literal, field_name))
        fields = tuple(dict.fromkeys(f for _, f in pieces if f is not None))
        return cls(source=source, pieces=tuple(pieces), fields=fields)

    def render(self, captures: Mapping[str, str]) -> str:
        return "".join(lit + (captures[f] if f is not None else "") for lit, f in self.pieces)


@dataclass(frozen=True)
class PathMapping:
    """What a rule makes of one file. `entity_name` keeps the tree's spelling; `key` is the
    match key (None for `table` files, which name many entities, and for `id` mode until
    `with_key`); `scope` is the path of the folder that holds the entity."""

    relpath: str
    rule_index: int
    entity_type: str
    role: str
    entity_name: str | None
    key: str | None
    scope: str
    match_key: str
    link_attributes: Mapping[str, LinkValue] = field(default_factory=dict)
    entity_attributes: Mapping[str, LinkValue] = field(default_factory=dict)
    attribute: str | None = None
    pre_approved: bool = False

    def with_key(self, key: str) -> PathMapping:
        return replace(self, key=key)


@dataclass(frozen=True)
class Rule:
    pattern: Pattern
    entity_type: str
    role: str
    name: NameTemplate | None
    match_key: str = "name"
    entity_attributes: tuple[str, ...] = ()
    attribute: str | None = None
    pre_approved: bool = False

    def map(self, relpath: str, index: int) -> PathMapping | None:
        m = self.pattern.match(relpath)
        if m is None:
            return None
        values: dict[str, LinkValue] = {}
        for capture, text in m.captures.items():
            numbered = capture in self.pattern.numeric or capture in _NUMBERED_CAPTURES
            values[capture] = int(text) if numbered and text.isascii() and text.isdigit() else text
        fields = self.name.fields if self.name else ()
        link = {k: v for k, v in values.items() if k not in fields and k not in self.entity_attributes}
        if self.role == ROLE_EPISODE:
            number = parse_episode(relpath.rsplit("/", 1)[-1])
            if not isinstance(link.get("season"), int) and number.season is not None:
                link["season"] = number.season
            if not isinstance(link.get("episode"), int) and number.episode is not None:
                link["episode"] = number.episode
        entity_name = self.name.render(m.captures) if self.name else None
        scope = m.prefix_through(fields)
        key: str | None = None
        if entity_name is not None:
            if self.match_key == "name":
                key = name_key(entity_name)
            elif self.match_key == "path":
                key = path_key(scope)
        return PathMapping(
            relpath=relpath,
            rule_index=index,
            entity_type=self.entity_type,
            role=self.role,
            entity_name=entity_name,
            key=key,
            scope=scope,
            match_key=self.match_key,
            link_attributes=link or NO_LINK_ATTRIBUTES,
            entity_attributes={k: values[k] for k in self.entity_attributes} or NO_LINK_ATTRIBUTES,
            attribute=self.attribute,
            pre_approved=self.pre_approved,
        )


@dataclass(frozen=True)
class RuleSet:
    name: str
    rules: tuple[Rule, ...]
    description: str = ""
    # Every rule's pattern as one alternative of one regex, in order (group `r<index>`): the
    # first alternative that matches is the first rule that does. Most files of a legacy tree
    # match no rule at all; in the million-file bench tree (88 % of it under Archive/) trying
    # its 40 rules one by one in Python cost 10 s of the event loop's time.
    _first: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alternatives = "|".join(f"(?P<r{i}>{rule.pattern.bare_regex})" for i, rule in enumerate(self.rules))
        object.__setattr__(self, "_first", re.compile(alternatives, re.IGNORECASE))

    def map_path(self, relpath: str) -> PathMapping | None:
        """The first matching rule's mapping of `relpath` (relative, '/'-separated), or None."""
        m = self._first.fullmatch(relpath)
        if m is None or m.lastgroup is None:
            return None
        start = int(m.lastgroup[1:])
        for index in range(start, len(self.rules)):
            mapping = self.rules[index].map(relpath, index)
            if mapping is not None:
                return mapping
        return None


def parse_rule(table: Mapping[str, Any], *, index: int, match_key: str = "name") -> Rule:
    """One rule from its config table; `RuleError` names the rule and the problem."""
    pattern_source = table.get("pattern")
    where = f"rules[{index}]" + (f" ({pattern_source!r})" if isinstance(pattern_source, str) else "")

    def fail(problem: str) -> RuleError:
        return RuleError(where, problem)

    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_RULE_KEYS))})")
    if not isinstance(pattern_source, str):
        raise fail("pattern is required and must be a string")
    try:
        pattern = compile_pattern(pattern_source)
    except PatternError as exc:
        raise fail(exc.problem) from None
    entity_type = _word(table, "entity_type", fail, required=True)
    role = _word(table, "role", fail, required=True)
    assert entity_type is not None and role is not None

    name_source = table.get("name")
    name: NameTemplate | None = None
    if role == ROLE_TABLE:
        if name_source is not None:
            raise fail("a 'table' rule takes no name: its rows name the entities")
    elif not isinstance(name_source, str) or not name_source.strip():
        raise fail("name is required (an entity name template such as '{character}')")
    else:
        try:
            name = NameTemplate.parse(name_source, pattern.captures)
        except ValueError as exc:
            raise fail(str(exc)) from None

    mode = table.get("match_key", match_key)
    if mode not in MATCH_KEY_MODES:
        raise fail(f"match_key must be one of {', '.join(MATCH_KEY_MODES)}, not {mode!r}")

    entity_attributes = table.get("entity_attributes", [])
    if not isinstance(entity_attributes, list) or not all(isinstance(a, str) for a in entity_attributes):
        raise fail("entity_attributes must be an array of capture names")
    for capture in entity_attributes:
        if capture not in pattern.captures:
            raise fail(f"entity_attributes: {capture!r} is not a capture of the pattern")

    attribute = _word(table, "attribute", fail, required=False)
    if role == ROLE_SIDECAR and attribute is None:
        raise fail("a 'sidecar' rule needs attribute = the attribute its text fills")
    if role != ROLE_SIDECAR and attribute is not None:
        raise fail("attribute is only for rules with role = 'sidecar'")

    pre_approved = table.get("pre_approved", False)
    if not isinstance(pre_approved, bool):
        raise fail("pre_approved must be true or false")
    return Rule(
        pattern=pattern,
        entity_type=entity_type,
        role=role,
        name=name,
        match_key=str(mode),
        entity_attributes=tuple(entity_attributes),
        attribute=fold(attribute) if attribute else None,
        pre_approved=pre_approved,
    )


def parse_rules(
    tables: Sequence[Mapping[str, Any]], *, name: str = "inline", match_key: str | None = None
) -> RuleSet:
    """Inline rules (`[[roots.rules]]`) as a rule set; `match_key` is the default for rules
    that do not set their own."""
    if isinstance(tables, str | bytes) or not isinstance(tables, Sequence):
        raise RuleError("rules", "must be a rule set name or an array of rule tables")
    if not tables:
        raise RuleError("rules", "is empty: give a rule set name or at least one rule")
    if match_key is not None and match_key not in MATCH_KEY_MODES:
        raise RuleError("match_key", f"must be one of {', '.join(MATCH_KEY_MODES)}, not {match_key!r}")
    rules = []
    for index, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise RuleError(f"rules[{index}]", "must be a table")
        rules.append(parse_rule(table, index=index, match_key=match_key or "name"))
    return RuleSet(name=name, rules=tuple(rules))


def shipped_rule_sets() -> tuple[str, ...]:
    folder = resources.files(__package__) / "rulesets"
    return tuple(
        sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))
    )


def load_rule_set(name: str, *, match_key: str | None = None) -> RuleSet:
    """A shipped rule set by name; `match_key` (a root's setting) overrides the set's default."""
    known = shipped_rule_sets()
    if not _SET_NAME.fullmatch(name) or name not in known:
        raise RuleError("rules", f"no shipped rule set {name!r} (shipped: {', '.join(known)})")
    resource = resources.files(__package__) / "rulesets" / f"{name}.toml"
    return parse_rule_set_file(resource.read_bytes(), name, match_key=match_key)


def parse_rule_set_file(data: bytes, name: str, *, match_key: str | None = None) -> RuleSet:
    """A rule set file's content (the shipped sets' format: `description`, `match_key`,
    `[[rules]]`), named `name` in errors."""
    where = f"rule set {name!r}"
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleError(where, f"invalid TOML: {exc}") from None
    unknown = sorted(set(table) - _SET_KEYS)
    if unknown:
        raise RuleError(where, f"unknown key {unknown[0]!r}")
    default = match_key if match_key is not None else table.get("match_key")
    try:
        rule_set = parse_rules(table.get("rules", []), name=name, match_key=default)
    except RuleError as exc:
        raise RuleError(f"{where}: {exc.where}", exc.problem) from None
    return replace(rule_set, description=str(table.get("description", "")))


def rule_set_for_root(rules: object, *, match_key: object = None) -> RuleSet:
    """A root's `rules` value: a shipped set's name or an array of inline rule tables."""
    if match_key is not None and not isinstance(match_key, str):
        raise RuleError("match_key", "must be a string")
    if isinstance(rules, str):
        return load_rule_set(rules, match_key=match_key)
    if isinstance(rules, Sequence):
        return parse_rules(rules, match_key=match_key)
    raise RuleError("rules", "must be a rule set name or an array of rule tables")


def _word(
    table: Mapping[str, Any], key: str, fail: Callable[[str], RuleError], *, required: bool
) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise fail(f"{key} must be a non-empty name without '/' or surrounding spaces, not {value!r}")
    return value
