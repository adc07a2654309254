"""Near-duplicate videos: groups of videos whose fingerprints (the pHashes of sampled frames, made
by `video.video_fingerprint`) are close, compared with `video.fingerprint_distance`.

Not an index: a studio's catalog holds thousands of videos, and comparing each only with those of
about the same duration is quick enough (see `video_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from importd.media.near_groups import K, NearGroup, components
from importd.media.video import (
    VIDEO_NEAR_MAX_DISTANCE,
    VideoFingerprint,
    durations_compatible,
    fingerprint_distance,
)


def video_groups(
    fingerprints: Iterable[tuple[K, VideoFingerprint]], max_distance: float = VIDEO_NEAR_MAX_DISTANCE
) -> list[NearGroup[K]]:
    """Groups of near-duplicate videos: fingerprint distance ≤ `max_distance` within the duration
    tolerance. Members carry their distance to the anchor, or, when a member joined through a chain
    and cannot be compared with the anchor directly, its closest link.

    Videos are sorted by duration and each is compared only with those whose duration is compatible,
    so the work is proportional to videos × videos-of-about-the-same-length, not all pairs. A
    studio's catalog holds thousands of videos, not millions; no further index is needed.
    """
    items = sorted(fingerprints, key=lambda item: item[1].duration_s)
    if len(items) < 2:
        return []
    sources, targets = [], []
    linked: dict[int, float] = {}  # each video's closest link
    for i, (_, a) in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j][1]
            if not durations_compatible(a.duration_s, b.duration_s):
                break  # sorted by duration: every later one is longer still
            distance = fingerprint_distance(a, b)
            if distance is not None and distance <= max_distance:
                sources.append(i)
                targets.append(j)
                linked[i] = min(distance, linked.get(i, distance))
                linked[j] = min(distance, linked.get(j, distance))
    if not sources:
        return []
    degree, members_by_label = components(
        np.array(sources, np.int64), np.array(targets, np.int64), len(items)
    )
    result = []
    for slots in members_by_label:
        anchor = max(slots, key=lambda s: (degree[s], -s))
        members = []
        for s in slots:
            distance = 0.0 if s == anchor else fingerprint_distance(items[anchor][1], items[s][1])
            members.append((s != anchor, linked[s] if distance is None else distance, s))
        members.sort()
        result.append(NearGroup(items[anchor][0], tuple((items[s][0], d) for _, d, s in members)))
    result.sort(key=lambda g: -len(g.members))
    return result
