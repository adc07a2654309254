"""The search loops behind HashIndex: the C extension and the numpy fallback give the same answers on
the same arenas, edge cases included; a bad arena is refused, never read out of bounds; nothing
imports numba; and the kernel is fenced off (only `hash_index` imports it, and no index module
imports the video decoder)."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import importd.media
from importd.media import hamming_kernel, hash_index
from importd.media.hash_index import HashIndex

MEDIA = Path(importd.media.__file__).parent
INDEXES = ("hash_index", "embedding_index", "near_groups")
TOP = 1 << 63
Words = npt.NDArray[np.uint64]

needs_c = pytest.mark.skipif(hamming_kernel.COMPILED is None, reason="the C extension is not built")


def imported_by(module: Path) -> set[str]:
    """The importd.media modules `module` imports, by their last name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "importd.media":
                names |= {a.name for a in node.names}
            elif node.module.startswith("importd.media."):
                names.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("importd.media.")}
    return names


def test_only_the_hash_index_imports_the_kernel() -> None:
    package = MEDIA.parent
    users = sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py") if "hamming_kernel" in imported_by(p)
    )
    assert users == ["media/hash_index.py"]


def test_no_index_module_imports_the_video_decoder() -> None:
    for name in INDEXES:
        assert not imported_by(MEDIA / f"{name}.py") & {"video", "video_groups"}, name


def test_the_hash_index_uses_only_the_kernels_interface() -> None:
    assert all(hasattr(hamming_kernel, name) for name in hamming_kernel.__all__)
    tree = ast.parse((MEDIA / "hash_index.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("hamming_kernel", "hk")
    }
    assert used and used <= set(hamming_kernel.__all__), used - set(hamming_kernel.__all__)


def test_searching_never_imports_numba() -> None:
    """numba (and its LLVM) made MemoryDenyWriteExecute= impossible: the index must not load it."""
    script = (
        "import sys\n"
        "from importd.media.hash_index import HashIndex\n"
        "index = HashIndex()\n"
        "index.add_many([(0, 0), (1, 1), (2, 3)])\n"
        "index.add('late', 7)\n"
        "assert index.query(0, 2) and index.groups(2)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- both kernels on the same arenas ------------------------------------------------------------------


def near(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def arena_of(
    values: list[int], radius: int, *, tail: Sequence[int] = (), removed: Sequence[int] = ()
) -> Words:
    """An index's arena with `values` in its tables, `tail` after them, `removed` slots marked, and the
    plan for `radius` installed."""
    index: HashIndex[int] = HashIndex(min_rebuild=max(1, len(tail)))
    index.add_many(enumerate(values))
    for key, value in enumerate(tail, start=len(values)):
        index.add(key, value)
    for key in removed:
        index.remove(key)
    arena = index._arena
    arena._install(radius)
    return arena.words


def hits_of(kernel: hamming_kernel.Kernel, arena: Words, query: int) -> tuple[int, list[int]]:
    room = np.zeros(4, np.uint64)
    found = kernel.collect(arena, query, room)
    if found > len(room):
        room = np.zeros(found, np.uint64)
        assert kernel.collect(arena, query, room) == found
    return found, sorted(room[:found].tolist())


def pairs_of(kernel: hamming_kernel.Kernel, arena: Words) -> tuple[int, set[tuple[int, int, int]]]:
    hits, owners = np.zeros(3, np.uint64), np.zeros(3, np.uint64)
    found = kernel.collect_pairs(arena, hits, owners)
    if found > len(hits):
        hits, owners = np.zeros(found, np.uint64), np.zeros(found, np.uint64)
        assert kernel.collect_pairs(arena, hits, owners) == found
    shift, mask = hamming_kernel.DISTANCE_SHIFT, hamming_kernel.SLOT_MASK
    pairs = {
        (min(o, h & mask), max(o, h & mask), h >> shift)
        for o, h in zip(owners[:found].tolist(), hits[:found].tolist(), strict=True)
    }
    assert len(pairs) == found  # each pair once
    return found, pairs


def brute_hits(values: list[int], alive: set[int], query: int, radius: int) -> list[int]:
    shift = hamming_kernel.DISTANCE_SHIFT
    return sorted(
        (value ^ query).bit_count() << shift | slot
        for slot, value in enumerate(values)
        if slot in alive and (value ^ query).bit_count() <= radius
    )


def brute_pairs(values: list[int], radius: int) -> set[tuple[int, int, int]]:
    hashes = np.array(values, np.uint64)
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int64)
    rows, cols = np.nonzero(np.triu(distances <= radius, 1))
    return set(zip(rows.tolist(), cols.tolist(), distances[rows, cols].tolist(), strict=True))


def kernels() -> list[hamming_kernel.Kernel]:
    return [k for k in (hamming_kernel.COMPILED, hamming_kernel.NUMPY) if k is not None]


def sample(seed: int, count: int, copies: int) -> list[int]:
    """Random hashes, a third with the top bit set, and near copies (up to 12 bits) of them."""
    rng = np.random.default_rng(seed)
    values = [int(v) for v in rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)]
    values[: count // 3] = [v | TOP for v in values[: count // 3]]
    for i in range(copies):
        values.append(
            near(values[i % count], rng.choice(64, int(rng.integers(0, 13)), replace=False).tolist())
        )
    return values


RADII = (0, 1, 2, 6, 10, 20, 32, 64)
CASES = {
    "empty": [],
    "one": [TOP | 5],
    "duplicates": [0xDEAD_BEEF_0123_4567] * 40 + [TOP | 0xDEAD_BEEF_0123_4567] * 3,
    "extremes": [0, (1 << 64) - 1, TOP, TOP - 1, 1, TOP | 1],
    "random": sample(7, 600, 600),
}


@pytest.fixture(params=["cost model", "free probes"])
def plans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost model scans small indexes at wide radii; with probes free, every radius probes."""
    if request.param == "free probes":
        monkeypatch.setattr(hash_index, "_PROBE_COST", 0.0)


@pytest.mark.usefixtures("plans")
@pytest.mark.parametrize("case", list(CASES))
def test_both_kernels_answer_queries_alike(case: str) -> None:
    values = CASES[case]
    queries = [*values[:50], 0, (1 << 64) - 1, TOP, near(values[0] if values else 0, [63, 0, 9])]
    for radius in RADII:
        arena = arena_of(values, radius)
        for query in queries:
            expected = brute_hits(values, set(range(len(values))), query, radius)
            for kernel in kernels():
                assert hits_of(kernel, arena, query) == (len(expected), expected), (kernel.name, radius)


@pytest.mark.usefixtures("plans")
@pytest.mark.parametrize("case", list(CASES))
def test_both_kernels_find_the_same_pairs(case: str) -> None:
    values = CASES[case]
    for radius in RADII:
        arena = arena_of(values, radius)
        expected = brute_pairs(values, radius)
        for kernel in kernels():
            assert pairs_of(kernel, arena) == (len(expected), expected), (kernel.name, radius)


def test_both_kernels_read_the_tail_and_removals_alike() -> None:
    values = sample(8, 400, 300)
    tail = [near(v, [3, 60]) for v in values[:150]] + [values[0]] * 5
    removed = list(range(0, len(values) + len(tail), 9))
    everything = values + tail
    alive = set(range(len(everything))) - set(removed)
    for radius in (0, 4, 10, 64):
        arena = arena_of(values, radius, tail=tail, removed=removed)
        assert int(arena[hamming_kernel.H_TAIL_COUNT]) == len(tail)
        for query in everything[::7]:
            expected = brute_hits(everything, alive, query, radius)
            for kernel in kernels():
                assert hits_of(kernel, arena, query) == (len(expected), expected)


def test_pairs_need_the_tail_folded_in() -> None:
    arena = arena_of([1, 2, 3], 2, tail=[4])
    for kernel in kernels():
        with pytest.raises(ValueError, match="tail"):
            kernel.collect_pairs(arena, np.zeros(8, np.uint64), np.zeros(8, np.uint64))


@needs_c
def test_a_bad_arena_is_refused() -> None:
    """Every offset is checked before it is followed (the sanitizer build runs this too)."""
    assert hamming_kernel.COMPILED is not None
    collect, collect_pairs = hamming_kernel.COMPILED.collect, hamming_kernel.COMPILED.collect_pairs
    good = arena_of(sample(9, 300, 100), 2)  # probed, not scanned: the run bounds are read
    room = np.zeros(16, np.uint64)
    assert collect(good, 0, room) >= 0
    plan = int(good[hamming_kernel.H_PLAN])
    first_offsets = int(good[hamming_kernel.H_CHUNK + 2])
    broken = {
        "chunk count": (hamming_kernel.H_CHUNKS, 17),
        "built": (hamming_kernel.H_BUILT, len(good)),
        "tail": (hamming_kernel.H_TAIL_COUNT, len(good) - 5),
        "plan": (hamming_kernel.H_PLAN, len(good) - 2),
        "width": (hamming_kernel.H_CHUNK + 1, 40),
        "offsets": (hamming_kernel.H_CHUNK + 2, len(good) - 3),
        "radius": (plan + hamming_kernel.P_RADIUS, 65),
        "probes": (plan + hamming_kernel.P_PROBES, len(good)),
        "run bound": (first_offsets + 1, len(good) + 100),
        "slot delta": (hamming_kernel.H_SLOT_DELTA, 0),  # slots read from the values: huge
    }
    for what, (word, value) in broken.items():
        arena = good.copy()
        arena[word] = value
        with pytest.raises(ValueError, match="bad arena"):
            collect(arena, int(arena[int(arena[hamming_kernel.H_VALUES])]), room)
            collect_pairs(arena, room, room.copy())
            raise AssertionError(f"{what}: accepted")
    with pytest.raises(ValueError, match="arena"):
        collect(good[:10], 0, room)
    with pytest.raises(ValueError, match="aligned"):
        collect(good.view(np.uint8)[1:-7], 0, room)
    with pytest.raises(TypeError):
        collect(good, 0, bytes(8))  # read-only results


@needs_c
def test_the_c_loops_release_the_gil() -> None:
    """`groups` over a large index runs in a worker thread while the event loop goes on."""
    assert hamming_kernel.COMPILED is not None
    arena = arena_of(sample(10, 20_000, 0), 64)  # a full scan: 200 million pairs compared
    hits, owners = np.zeros(1 << 16, np.uint64), np.zeros(1 << 16, np.uint64)
    ticks = 0
    worker = threading.Thread(target=hamming_kernel.COMPILED.collect_pairs, args=(arena, hits, owners))
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert ticks > 5
