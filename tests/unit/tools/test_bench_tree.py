"""The scale bench's tree generator (tools/bench_tree.py): the same parameters make the same tree,
with every kind of file it promises, its rules map the characters, films and episodes, and a
second run reuses the tree instead of writing it again."""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import blake3
import pytest

from bench.scale import tool
from importd.config import parse_config

bench_tree = tool("bench_tree")
PARAMS = bench_tree.TreeParams(files=3_000, huge=2, huge_mib=1, seed=7)


def _listing(root: Path, larger: int = -1) -> tuple[dict[bytes, str], dict[bytes, bytes]]:
    """Every regular file's BLAKE3 (of those larger than `larger` bytes) and every symlink's
    target, by relative bytes path."""
    top = os.fsencode(root)
    files: dict[bytes, str] = {}
    links: dict[bytes, bytes] = {}
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            if os.path.islink(path):
                links[rel] = os.readlink(path)
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
                if len(data) > larger:
                    files[rel] = blake3.blake3(data).hexdigest()
    return files, links


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    base = tmp_path_factory.mktemp("tree")
    summary, fresh = bench_tree.generate(base, PARAMS)
    assert fresh
    return base, summary


def test_the_same_parameters_make_the_same_tree_and_another_seed_another(
    made: tuple[Path, Any], tmp_path: Path
) -> None:
    base, _ = made
    again, _ = bench_tree.generate(tmp_path / "again", PARAMS)
    assert _listing(base / "root") == _listing(Path(again.root))
    other, _ = bench_tree.generate(tmp_path / "other", bench_tree.TreeParams(3_000, 2, 1, seed=8))
    # The archive's contents differ (sidecars and NFOs are text, and a file of a few bytes holds
    # only the head naming it: those may coincide).
    mine, theirs = (
        {h for rel, h in _listing(root, 16)[0].items() if rel.startswith(b"Archive/")}
        for root in (base / "root", Path(other.root))
    )
    assert mine and theirs and mine.isdisjoint(theirs)


def test_the_tree_holds_every_kind_of_file_it_promises(made: tuple[Path, Any]) -> None:
    base, summary = made
    files, links = _listing(base / "root")
    assert len(files) == PARAMS.files == summary.files
    assert summary.catalogued == PARAMS.files - sum(p.endswith(b".part") for p in files)
    sizes = {rel: os.path.getsize(os.path.join(os.fsencode(base / "root"), rel)) for rel in files}
    tiny = [n for rel, n in sizes.items() if rel.startswith(b"Archive/")]
    assert max(tiny) <= 16 << 10 and 1000 < sorted(tiny)[len(tiny) // 2] < 8000
    assert sorted(rel for rel, n in sizes.items() if n == 1 << 20) == [
        b"Rushes/Tournage 1/rush 01.mxf",
        b"Rushes/Tournage 2/rush 02.mxf",
    ]
    # Copies: the backup folder's files have the content of a file elsewhere.
    counts = Counter(files.values())
    backups = [rel for rel in files if rel.startswith(b"Sauvegarde 2019/")]
    assert len(backups) == summary.duplicates > 0
    assert all(counts[files[rel]] >= 2 for rel in backups)
    # Symlink farms: relative links, a few dangling.
    assert len(links) == summary.symlinks > 0
    assert all(not target.startswith(b"/") for target in links.values())
    root = os.fsencode(base / "root")
    dangling = [rel for rel in links if not os.path.exists(os.path.join(root, rel))]
    assert len(dangling) == summary.dangling
    # Names: not UTF-8, with spaces and accents, some decomposed.
    names = [*files, *links]
    undecodable = [p for p in names if not _decodes(p)]
    assert undecodable and len({os.path.dirname(p) for p in undecodable}) > 1
    assert any(b" " in p and "é".encode() in p for p in names)
    assert any("e\u0301".encode() in p for p in names)
    assert max(p.count(b"/") for p in names) >= 6


def _decodes(path: bytes) -> bool:
    try:
        path.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_the_fragment_s_rules_map_characters_films_and_episodes(made: tuple[Path, Any]) -> None:
    base, summary = made
    fragment = (base / bench_tree.FRAGMENT).read_text(encoding="utf-8")
    config = parse_config(tomllib.loads(f'state_dir = "{base / "state"}"\n' + fragment))
    (root,) = config.roots
    assert root.path == Path(summary.root) and root.rule_set is not None
    files, _ = _listing(base / "root")
    paths = [p.decode() for p in files if _decodes(p)]

    def kinds(prefix: str) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for path in paths:
            if path.startswith(prefix):
                m = root.rule_set.map_path(path)
                found[(m.entity_type, m.role) if m else ("", "")] += 1
        return found

    characters = kinds("Characters/")
    assert characters[("character", "scene_video")] > 0 and characters[("character", "metadata")] > 0
    # Each scene's sidecar beside it (the last character's may be cut at the section's share).
    assert 0 <= characters[("character", "scene_video")] - characters[("character", "video_json")] <= 1
    assert characters[("", "")] == 0
    films = kinds("Films/")
    assert films[("film", "film")] == summary.films and summary.films - films[("film", "nfo")] <= 1
    episodes = kinds("Séries/")
    assert episodes == Counter({("series", "episode"): summary.episodes})


def test_a_second_run_reuses_the_tree_and_other_parameters_replace_it(
    made: tuple[Path, Any], tmp_path: Path
) -> None:
    base, _ = made
    stamp = (base / bench_tree.STAMP).stat().st_mtime_ns
    _, fresh = bench_tree.generate(base, PARAMS)
    assert not fresh and (base / bench_tree.STAMP).stat().st_mtime_ns == stamp

    small = tmp_path / "small"
    bench_tree.generate(small, bench_tree.TreeParams(files=500, huge=1, huge_mib=1))
    summary, fresh = bench_tree.generate(small, bench_tree.TreeParams(files=400, huge=1, huge_mib=1))
    assert fresh and len(_listing(small / "root")[0]) == summary.files == 400

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("not a bench tree")
    with pytest.raises(SystemExit, match="not a tree made here"):
        bench_tree.generate(foreign, PARAMS)
    assert (foreign / "precious.txt").exists()
