"""Other servers' attribute writes, into this server's live gap report.

Entities are site-wide: a character found on two servers is one entity, and what a sidecar on
one server says of it (its height) fills a gap on the other. Each daemon's live gap report hears
its own writes as events; this stage reads the catalog's entities written since it last looked
and hands the attributes that differ from the report's to it, so a gap another server filled
closes here within a few seconds instead of at the next start. Nothing runs while no other
server's daemon uses the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from importd.catalog.entities import entities_updated_since
from importd.catalog.hosts import others_exist
from importd.entities import AttributeSet, EntityRef, GapEvent, JsonValue, fold

log = logging.getLogger("importd.site")

FOLLOW_EVERY_S = 5.0
# Servers' clocks differ and a transaction commits after it stamped `updated`: look back this far
# each time (re-reading an entity whose attributes the report already holds changes nothing).
LOOK_BACK_S = 120.0


def attribute_events(
    updated: Sequence[tuple[str, str, str, dict[str, Any], float]],
    held: Callable[[str, str], Mapping[str, JsonValue] | None],
) -> list[GapEvent]:
    """AttributeSet events that bring the report's attributes to the catalog's, for the entities
    the report holds (others are not on this server's checklist)."""
    events: list[GapEvent] = []
    for etype, key, name, attributes, _ in updated:
        have = held(etype, key)
        if have is None:
            continue
        ref = EntityRef(etype, key, name)
        want = {fold(k): v for k, v in attributes.items() if v is not None}
        events += [
            AttributeSet(ref, attribute, value)
            for attribute, value in want.items()
            if have.get(attribute) != value
        ]
        events += [AttributeSet(ref, attribute, None) for attribute in have if attribute not in want]
    return events


class SiteAttributes:
    def __init__(
        self,
        engine: AsyncEngine,
        host: str,
        held: Callable[[str, str], Mapping[str, JsonValue] | None],
        emit: Callable[[list[GapEvent]], None],
        clock: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.host = host
        self.held = held
        self.emit = emit
        self.clock = clock

    async def follow_once(self, since: float) -> float:
        """One look at the catalog; returns where the next one starts."""
        now = self.clock()
        async with self.engine.connect() as conn:
            if not await conn.run_sync(others_exist, self.host):
                return now
            updated = await conn.run_sync(entities_updated_since, since - LOOK_BACK_S)
        events = attribute_events(updated, self.held)
        if events:
            self.emit(events)
        return now

    async def run(self) -> None:
        since = self.clock()
        while True:
            await anyio.sleep(FOLLOW_EVERY_S)
            try:
                since = await self.follow_once(since)
            except Exception as exc:
                log.warning("reading other servers' entity updates failed: %s: %s", type(exc).__name__, exc)
