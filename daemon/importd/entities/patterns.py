"""Rule patterns: a small path language compiled to one regular expression.

A pattern is a relative path of `/`-separated segments matched against a file's path relative
to its root (text as the catalog gives it, undecodable bytes surrogate-escaped):

    {name}          a named capture: one or more characters within one segment (greedy, so
                    `{title} ({year})` on "Film (Director's cut) (1998)" gives year 1998)
    {name:int}      a capture of digits only
    {a|b|c}         one of the alternatives, literal text (e.g. `{Séries|Series|TV Shows}`);
                    not captured
    *               zero or more characters within one segment
    **              a whole segment: zero or more segments (one or more as the last segment,
                    since a file needs a name)
    {{ and }}       a literal brace; every other character, parentheses included, is literal

So `Films/{title} ({year:int})/*` and `{Séries|Series|TV Shows}/{series}/{Saison|Season}
{season:int}/*` read as the trees they describe.

Literal text (including alternatives) matches case-insensitively, and in either its NFC or its
NFD spelling: legacy trees mix `.MP4` and `.mp4`, "saison 01" and "Saison 01", and folders
copied from macOS arrive decomposed. Captures return the path's own spelling, unchanged; it is
the entity key (see `keys.py`) that folds case and normalisation.

A pattern that cannot be understood raises `PatternError` naming the problem. Two captures or
wildcards side by side (`{a}{b}`, `{a}*`) are refused because where one ends would be a guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Pattern", "PatternError", "PatternMatch", "compile_pattern"]

_CAPTURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAPTURE_KINDS = {"int": "[0-9]+"}
_ANY_IN_SEGMENT = "[^/]+"


class PatternError(ValueError):
    def __init__(self, pattern: str, problem: str) -> None:
        self.pattern = pattern
        self.problem = problem
        super().__init__(f"pattern {pattern!r}: {problem}")


@dataclass(frozen=True)
class PatternMatch:
    captures: dict[str, str]
    # End offset in the path of each capture, to find the segment that holds it.
    ends: dict[str, int]
    relpath: str

    def prefix_through(self, names: tuple[str, ...]) -> str:
        """The path up to the end of the segment holding the last of `names` ("" if none)."""
        ends = [self.ends[n] for n in names if n in self.ends]
        if not ends:
            return ""
        cut = self.relpath.find("/", max(ends))
        return self.relpath if cut < 0 else self.relpath[:cut]


@dataclass(frozen=True)
class Pattern:
    source: str
    captures: tuple[str, ...]
    regex: re.Pattern[str]
    # Captures declared `{name:int}`: their values are digits, handed on as numbers.
    numeric: frozenset[str] = frozenset()

    @property
    def bare_regex(self) -> str:
        """The regex's source with its captures made non-capturing, to join into a larger one
        (`RuleSet`). A capture's opening `(?P<name>` cannot occur in escaped literal text."""
        source = self.regex.pattern
        for name in self.captures:
            source = source.replace(f"(?P<{name}>", "(?:")
        return source

    def match(self, relpath: str) -> PatternMatch | None:
        m = self.regex.fullmatch(relpath)
        if m is None:
            return None
        return PatternMatch(
            captures={n: m.group(n) for n in self.captures},
            ends={n: m.end(n) for n in self.captures},
            relpath=relpath,
        )


def compile_pattern(source: str) -> Pattern:
    if not source:
        raise PatternError(source, "is empty")
    if source.startswith("/"):
        raise PatternError(source, "must be relative to the root (no leading '/')")
    segments = source.split("/")
    captures: list[str] = []
    numeric: set[str] = set()
    parts: list[str] = []
    join = False
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "":
            raise PatternError(source, "has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise PatternError(source, f"segment {segment!r} is not allowed")
        if segment == "**":
            if index > 0 and segments[index - 1] == "**":
                raise PatternError(source, "repeats '**'")
            if last:
                parts.append(("/" if join else "") + f"{_ANY_IN_SEGMENT}(?:/{_ANY_IN_SEGMENT})*")
            else:
                parts.append(("/" if join else "") + f"(?:{_ANY_IN_SEGMENT}/)*")
                join = False
                continue
        elif "**" in segment:
            raise PatternError(source, f"'**' must be a whole segment, not part of {segment!r}")
        else:
            parts.append(("/" if join else "") + _segment_regex(source, segment, captures, numeric))
        join = True
    regex = re.compile("".join(parts), re.IGNORECASE)
    return Pattern(source=source, captures=tuple(captures), regex=regex, numeric=frozenset(numeric))


def _segment_regex(source: str, segment: str, captures: list[str], numeric: set[str]) -> str:
    out: list[str] = []
    literal: list[str] = []
    previous_variable = False  # the last token was a capture or '*'

    def flush_literal() -> None:
        if literal:
            out.append(_literal_regex("".join(literal)))
            literal.clear()

    i = 0
    while i < len(segment):
        ch = segment[i]
        if segment.startswith("{{", i) or segment.startswith("}}", i):
            literal.append(ch)
            previous_variable = False
            i += 2
        elif ch == "}":
            raise PatternError(source, f"unmatched '}}' in {segment!r} (write '}}}}' for a literal brace)")
        elif ch == "{":
            close = segment.find("}", i + 1)
            if close < 0:
                raise PatternError(source, f"unclosed '{{' in {segment!r}")
            body = segment[i + 1 : close]
            if "{" in body:
                raise PatternError(source, f"nested '{{' in {segment!r}")
            if "|" in body:
                alternatives = body.split("|")
                if any(a == "" for a in alternatives):
                    raise PatternError(source, f"empty alternative in {{{body}}}")
                flush_literal()
                out.append("(?:" + "|".join(_literal_regex(a) for a in alternatives) + ")")
                previous_variable = False
            else:
                if previous_variable:
                    raise PatternError(
                        source, f"{{{body}}} follows another capture or '*' directly; the split is ambiguous"
                    )
                flush_literal()
                out.append(_capture_regex(source, body, captures, numeric))
                previous_variable = True
            i = close + 1
        elif ch == "*":
            if previous_variable:
                raise PatternError(source, f"'*' follows another capture or '*' directly in {segment!r}")
            flush_literal()
            out.append("[^/]*")
            previous_variable = True
            i += 1
        else:
            literal.append(ch)
            previous_variable = False
            i += 1
    flush_literal()
    return "".join(out)


def _capture_regex(source: str, body: str, captures: list[str], numeric: set[str]) -> str:
    name, colon, kind = body.partition(":")
    if not body:
        raise PatternError(source, "has empty braces '{}'")
    if colon and not kind:
        raise PatternError(source, f"{{{body}}}: missing capture kind after ':'")
    if not _CAPTURE_NAME.fullmatch(name):
        raise PatternError(
            source, f"{{{body}}}: capture names are letters, digits and '_' (alternatives need '|')"
        )
    if kind and kind not in _CAPTURE_KINDS:
        raise PatternError(source, f"{{{body}}}: unknown capture kind {kind!r} (known: int)")
    if name in captures:
        raise PatternError(source, f"capture {{{name}}} appears twice")
    captures.append(name)
    if kind == "int":
        numeric.add(name)
    return f"(?P<{name}>{_CAPTURE_KINDS.get(kind, _ANY_IN_SEGMENT)})"


def _literal_regex(text: str) -> str:
    nfc = unicodedata.normalize("NFC", text)
    nfd = unicodedata.normalize("NFD", text)
    if nfc == nfd:
        return re.escape(nfc)
    return f"(?:{re.escape(nfc)}|{re.escape(nfd)})"
