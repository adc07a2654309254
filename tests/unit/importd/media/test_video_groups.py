"""Video grouping on made-up fingerprints (no ffmpeg): distance, duration tolerance, blank frames,
chains; test_video.py groups fingerprints of real videos."""

from __future__ import annotations

from importd.media.video import VIDEO_NEAR_MAX_DISTANCE, VideoFingerprint
from importd.media.video_groups import video_groups

BASE = (0x0F0F_0F0F_0F0F_0F0F, 0x3333_CCCC_3333_CCCC, 0x5555_AAAA_5555_AAAA, 0x00FF_00FF_00FF_00FF)


def flip(value: int, bits: int) -> int:
    """`value` with its lowest `bits` bits flipped (a distance of `bits`)."""
    return value ^ ((1 << bits) - 1)


def fp(
    duration_s: float, frames: tuple[int | None, ...], blank: tuple[bool, ...] | None = None
) -> VideoFingerprint:
    return VideoFingerprint(duration_s, frames, blank or (False,) * len(frames))


def test_close_fingerprints_of_compatible_durations_group() -> None:
    prints = {
        "a": fp(100.0, BASE),
        "a_copy": fp(100.5, tuple(flip(v, 4) for v in BASE)),  # distance 4
        "far": fp(100.0, tuple(flip(v, 30) for v in BASE)),  # distance 30
        "long": fp(200.0, BASE),  # same frames, another duration: not comparable
    }
    groups = video_groups(prints.items())
    assert len(groups) == 1
    assert groups[0].members[0][1] == 0.0
    assert dict(groups[0].members) == {
        groups[0].anchor: 0.0,
        ({"a", "a_copy"} - {groups[0].anchor}).pop(): 4.0,
    }
    assert video_groups(prints.items(), max_distance=3) == []
    assert video_groups([("only", prints["a"])]) == []


def test_a_chain_joins_and_members_carry_their_distance_or_closest_link() -> None:
    step = tuple(flip(v, 8) for v in BASE)
    two_steps = tuple(flip(v, 16) for v in BASE)
    prints = [("x", fp(60.0, BASE)), ("y", fp(60.0, step)), ("z", fp(60.0, two_steps))]
    (group,) = video_groups(prints)
    assert group.anchor == "y"  # two links
    assert dict(group.members) == {"y": 0.0, "x": 8.0, "z": 8.0}
    assert all(d <= VIDEO_NEAR_MAX_DISTANCE for _, d in group.members)


def test_blank_frames_on_both_sides_are_no_evidence() -> None:
    blank = (True,) * len(BASE)
    prints = [("black1", fp(30.0, BASE, blank)), ("black2", fp(30.0, BASE, blank))]
    assert video_groups(prints) == []
