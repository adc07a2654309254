"""What another server wrote of an entity, as events for this server's live gap report."""

from __future__ import annotations

from importd.catalog.hosts import HostBeat
from importd.entities import AttributeSet, EntityRef, EntityState, LiveGapReport, parse_expectations
from importd.heartbeat import host_state
from importd.pipeline.site_attributes import attribute_events

EXPECT = parse_expectations({"character": {"attributes": ["age", "height"]}})


def test_attributes_another_server_wrote_close_the_gaps_here() -> None:
    live = LiveGapReport(EXPECT, [EntityState("character", "name:alice", "Alice", {"age": 30}, {})])
    assert live.report().completeness.satisfied == 1
    updated = [
        ("character", "name:alice", "Alice", {"age": 30, "Height": 170}, 5.0),
        ("character", "name:carol", "Carol", {"age": 9}, 5.0),  # not on this server's checklist
    ]
    events = attribute_events(updated, live.attributes_of)
    assert events == [AttributeSet(EntityRef("character", "name:alice", "Alice"), "height", 170)]
    for event in events:
        live.apply(event)
    assert live.report().completeness.satisfied == 2
    assert attribute_events(updated, live.attributes_of) == [], "nothing new: nothing to say"


def test_an_attribute_cleared_elsewhere_is_cleared_here() -> None:
    live = LiveGapReport(
        EXPECT, [EntityState("character", "name:alice", "Alice", {"age": 30, "height": 1}, {})]
    )
    events = attribute_events([("character", "name:alice", "Alice", {"age": 30}, 5.0)], live.attributes_of)
    assert events == [AttributeSet(EntityRef("character", "name:alice", "Alice"), "height", None)]


def test_a_host_is_up_stopped_or_silent() -> None:
    up = HostBeat("beta", "1", 1, 0.0, 100.0, 15.0, None)
    assert host_state(up, 130.0) == "up"
    assert host_state(up, 146.0) == "silent", "three beats missed"
    assert host_state(up._replace(stopped=100.0), 1000.0) == "stopped"
