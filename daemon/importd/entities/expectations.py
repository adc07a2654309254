"""What each entity type is expected to hold: the `[expect.<type>]` config tables.

    [expect.character]
    attributes = ["age", "notes"]   required attributes
    roles = ["source_image"]        at least one present file in each role
    scenes = ["intro", "dance"]     expected `scene_type` values among `scene_video` files

    [expect.series]
    episodes = "contiguous"         per season, every number from 1 to the highest linked
                                    (or a number: episodes 1..N in every season)

How these become requirements and the completeness figure is defined in `gaps.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from importd.entities.keys import fold

__all__ = [
    "CONTIGUOUS",
    "EpisodeExpectation",
    "ExpectationError",
    "Expectations",
    "TypeExpectation",
    "parse_expectations",
]

CONTIGUOUS: Final = "contiguous"
_EXPECT_KEYS: Final = frozenset({"attributes", "roles", "scenes", "episodes"})

EpisodeExpectation: TypeAlias = int | Literal["contiguous"] | None


class ExpectationError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


@dataclass(frozen=True)
class TypeExpectation:
    attributes: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    scenes: tuple[str, ...] = ()
    episodes: EpisodeExpectation = None


@dataclass(frozen=True)
class Expectations:
    by_type: Mapping[str, TypeExpectation] = field(default_factory=dict)

    def for_type(self, entity_type: str) -> TypeExpectation | None:
        return self.by_type.get(entity_type)


def parse_expectations(table: Mapping[str, Any] | None) -> Expectations:
    """The `[expect]` config table; `ExpectationError` names the key (`expect.character.roles`)."""
    if table is None:
        return Expectations()
    if not isinstance(table, Mapping):
        raise ExpectationError("expect", "must be a table of [expect.<entity type>] tables")
    by_type: dict[str, TypeExpectation] = {}
    for entity_type, raw in table.items():
        where = f"expect.{entity_type}"
        if not isinstance(raw, Mapping):
            raise ExpectationError(where, "must be a table")
        unknown = sorted(set(raw) - _EXPECT_KEYS)
        if unknown:
            raise ExpectationError(
                f"{where}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_EXPECT_KEYS))})"
            )
        episodes = raw.get("episodes")
        count = isinstance(episodes, int) and not isinstance(episodes, bool) and episodes >= 1
        if episodes is not None and episodes != CONTIGUOUS and not count:
            raise ExpectationError(
                f"{where}.episodes",
                f'must be "contiguous" or a number of episodes per season, not {episodes!r}',
            )
        by_type[entity_type] = TypeExpectation(
            attributes=_names(raw, "attributes", where),
            roles=_names(raw, "roles", where),
            scenes=_names(raw, "scenes", where),
            episodes=episodes,
        )
    return Expectations(by_type)


def _names(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ExpectationError(f"{where}.{key}", "must be an array of non-empty strings")
    folded = [fold(v) for v in value]
    for name in folded:
        if folded.count(name) > 1:
            raise ExpectationError(f"{where}.{key}", f"{name!r} is listed twice")
    return tuple(value)
