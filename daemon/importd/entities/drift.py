"""Drift: where a file that holds attribute values (a sidecar, an NFO, a metadata.json) and the
catalog disagree now. Pure: the caller reads the catalog and the files.

For each value a file says:
- `newer`: it differs from the entity's, and the file was written after the catalog took its
  value (`attribute_sources.at`): the file is probably the truth.
- `older`: it differs, and the catalog's value is the more recent one: the file is behind.
- `differs`: it differs, and the catalog does not know when its value came (no source row).
And for each value the catalog took from a file:
- `gone`: that file is missing now (a forgotten file is settled: the value stays, no line).
Each line says what would settle it: the open conflict to resolve, the file to rewrite, or the
file to restore or forget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from importd.entities.keys import fold
from importd.entities.metadata import JsonValue, is_filled, same_value

__all__ = ["DRIFT_KINDS", "FILE_SOURCE_KINDS", "DriftLine", "file_drift", "gone_drift"]

DriftKind = Literal["newer", "older", "differs", "gone"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("newer", "older", "differs", "gone")
# attribute_sources kinds whose source is a file under a root.
FILE_SOURCE_KINDS = ("metadata", "sidecar", "nfo")


@dataclass(frozen=True)
class DriftLine:
    kind: DriftKind
    attribute: str
    said: JsonValue  # what the file says (None: the file is gone)
    held: JsonValue  # what the entity holds
    conflict: int | None  # the open conflict that would settle it
    settle: str


def file_drift(
    said: Mapping[str, JsonValue],
    *,
    attributes: Mapping[str, JsonValue],
    sources: Mapping[str, tuple[str, str, float]],
    conflicts: Sequence[tuple[int, str, JsonValue, str]],
    mtime: float,
    path: str,
) -> list[DriftLine]:
    """The values in one file (`said`, written at `mtime`) that differ from the entity's."""
    out: list[DriftLine] = []
    for raw_name, value in said.items():
        name = fold(raw_name)
        held = attributes.get(name)
        if not is_filled(value) or not is_filled(held) or same_value(value, held):
            continue
        source = sources.get(name)
        kind: DriftKind = "differs" if source is None else ("newer" if mtime > source[2] else "older")
        conflict = next(
            (cid for cid, attr, proposed, _ in conflicts if attr == name and same_value(proposed, value)),
            None,
        )
        if conflict is not None:
            settle = (
                f"importctl resolve {conflict} --take-new"
                if kind != "older"
                else f"importctl resolve {conflict} --keep, then rewrite {path}"
            )
        elif kind == "newer":
            settle = (
                f"the catalog kept its value: rewrite {path} to say {_shown(held)}, "
                "or edit it again to raise a conflict"
            )
        else:
            settle = f"rewrite {path} to say {_shown(held)}"
        out.append(DriftLine(kind, name, value, held, conflict, settle))
    return out


def gone_drift(
    attributes: Mapping[str, JsonValue],
    sources: Mapping[str, tuple[str, str, float]],
    source: str,
    path: str,
) -> list[DriftLine]:
    """The values the entity took from the file `source` (as recorded) that is gone now."""
    return [
        DriftLine(
            "gone",
            name,
            None,
            attributes.get(name),
            None,
            f"restore {path}, or `importctl forget {path}` to keep the value without it",
        )
        for name, (kind, detail, _) in sorted(sources.items())
        if kind in FILE_SOURCE_KINDS and detail == source and name in attributes
    ]


def _shown(value: JsonValue) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
