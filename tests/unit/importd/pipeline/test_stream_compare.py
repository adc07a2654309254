"""The streamed comparison (a sorted walk merged with the catalog's rows in relpath order) gives
what the whole-snapshot comparison gives, on real trees, while holding a bounded window."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importd.config import DEFAULT_IGNORES, IgnoreRules
from importd.items import KnownRow
from importd.pipeline import reconcile
from importd.pipeline.reconcile import Signature, StreamComparer, WalkedFile, WalkError, walk, walk_listings
from tests.unit.importd.listed_rows import ListedRows

IGNORE = IgnoreRules(DEFAULT_IGNORES)


def whole(raw: bytes, present: list[KnownRow], in_error: list[bytes], start: bytes = b"") -> tuple[Any, ...]:
    """The reference: the whole walk and the whole catalog side by side, as sets."""
    walked: dict[bytes, Signature] = {}
    blocked: list[bytes] = []
    for item in walk(raw, start, IGNORE):
        if isinstance(item, WalkedFile):
            walked[item.relpath] = item.signature
        elif isinstance(item, WalkError):
            blocked.append(item.relpath)
    signatures = {row[0]: row[1:] for row in present}
    changed = [relpath for relpath, signature in walked.items() if signatures.get(relpath) != signature]
    vanished = [
        relpath
        for relpath in [*signatures, *in_error]
        if relpath not in walked and not any(relpath == b or relpath.startswith(b + b"/") for b in blocked)
    ]
    return sorted(changed), sorted(vanished), len(walked)


def streamed(
    raw: bytes, present: list[KnownRow], in_error: list[bytes], chunk: int, start: bytes = b""
) -> tuple[Any, ...]:
    comparer = StreamComparer(ListedRows(present, in_error, chunk), IGNORE)
    out = []
    for listing in walk_listings(raw, start, IGNORE):
        out += comparer.feed(listing)
    out += comparer.finish()
    relpaths = [f.relpath for f in out]
    assert len(relpaths) == len(set(relpaths)), "a file is handed on once"
    assert comparer.diff.changed_count == len(out)
    return sorted(relpaths), sorted(comparer.diff.vanished), comparer.diff.seen


# Names chosen to sort awkwardly against '/': '-' and '.' sort below it, '0' just above it.
NAMES = st.sampled_from([b"a", b"a-b", b"a.txt", b"a0", b"b", b"z", b"Z", b"\xe9t\xe9", b"x y", b"m"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map(lambda parts: b"/".join(parts))


def make_tree(raw: bytes, relpaths: list[bytes]) -> list[bytes]:
    """Files at the given paths (a path that is a folder of another is skipped): what was made."""
    made: list[bytes] = []
    for relpath in sorted(set(relpaths), key=len, reverse=True):
        path = raw + b"/" + relpath
        if os.path.isdir(path) or any(m.startswith(relpath + b"/") for m in made):
            continue
        parent = os.path.dirname(path)
        if any(os.path.isfile(raw + b"/" + p) for p in _parents(relpath)):
            continue
        os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(relpath[:3])
        made.append(relpath)
    return made


def _parents(relpath: bytes) -> list[bytes]:
    parts = relpath.split(b"/")
    return [b"/".join(parts[:i]) for i in range(1, len(parts))]


def catalog_of(raw: bytes, made: list[bytes], extra: list[bytes], rnd: random.Random) -> tuple[Any, ...]:
    """Rows as a catalog might hold them: most files known as they are, some changed, some
    unknown, some in error; plus rows for paths that are gone."""
    present: list[KnownRow] = []
    in_error: list[bytes] = []
    for relpath in made:
        st_ = os.lstat(raw + b"/" + relpath)
        row = (relpath, st_.st_size, st_.st_mtime_ns, reconcile.s64(st_.st_ino), reconcile.s64(st_.st_dev))
        pick = rnd.random()
        if pick < 0.6:
            present.append(row)
        elif pick < 0.75:
            present.append((relpath, row[1] + 1, *row[2:]))
        elif pick < 0.85:
            in_error.append(relpath)
    taken = set(made)
    for relpath in extra:
        if relpath not in taken:
            taken.add(relpath)
            (in_error.append(relpath) if rnd.random() < 0.2 else present.append((relpath, 1, 1, 1, 1)))
    return present, in_error


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(PATHS, min_size=0, max_size=25),
    gone=st.lists(PATHS, max_size=15),
    chunk=st.integers(1, 7),
    limit=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_the_streamed_diff_is_the_whole_snapshot_s_diff(
    tmp_path: Path, files: list[bytes], gone: list[bytes], chunk: int, limit: int, seed: int
) -> None:
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    raw = os.fsencode(str(root))
    made = make_tree(raw, files)
    present, in_error = catalog_of(raw, made, gone, random.Random(seed))
    with mock.patch.object(reconcile, "WINDOW_LIMIT", limit):
        assert streamed(raw, present, in_error, chunk) == whole(raw, present, in_error)
        if made:  # and for a folder's walk: rows of that folder only, as the catalog reads them
            top = made[0].split(b"/")[0]
            if os.path.isdir(raw + b"/" + top):
                below = [r for r in present if r[0] == top or r[0].startswith(top + b"/")]
                errs = [r for r in in_error if r == top or r.startswith(top + b"/")]
                assert streamed(raw, below, errs, chunk, top) == whole(raw, below, errs, top)


def test_the_walk_lists_folders_in_byte_order_of_their_prefixes(tmp_path: Path) -> None:
    for rel in ("a/x", "a-b/x", "a.d/x", "a0/x", "a/b/x", "a/b-c/x", "B/x", "z"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    listings = list(walk_listings(os.fsencode(str(tmp_path)), b"", IGNORE))
    prefixes = [listing.prefix for listing in listings]
    assert prefixes == sorted(prefixes) and len(prefixes) == 8
    assert [listing.upto for listing in listings] == [*prefixes[1:], None]


def test_a_deleted_folder_is_gone_a_window_at_a_time(tmp_path: Path) -> None:
    """50,000 rows of a deleted folder between two folders that are there: all vanished, never
    more than the window's limit held at once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "kept").write_bytes(b"1")
    (tmp_path / "c").mkdir()
    st_ = os.lstat(tmp_path / "a" / "kept")
    kept = (b"a/kept", st_.st_size, st_.st_mtime_ns, reconcile.s64(st_.st_ino), reconcile.s64(st_.st_dev))
    deleted = [(b"b/%06d" % i, 1, 1, 1, 1) for i in range(50_000)]
    rows = ListedRows([kept, *deleted], [], chunk=4096)
    comparer = StreamComparer(rows, IGNORE)
    held: list[int] = []
    original = comparer._rows_below

    def watched(*args: Any) -> dict[bytes, KnownRow]:
        window = original(*args)
        held.append(len(window))
        return window

    comparer._rows_below = watched  # type: ignore[method-assign]
    for listing in walk_listings(os.fsencode(str(tmp_path)), b"", IGNORE):
        assert comparer.feed(listing) == []
    assert comparer.finish() == []
    assert len(comparer.diff.vanished) == 50_000 and comparer.diff.seen == 1
    assert max(held) <= reconcile.WINDOW_LIMIT + 4096


def test_rows_below_an_unreadable_folder_stay(tmp_path: Path) -> None:
    comparer = StreamComparer(ListedRows([(b"locked/x", 1, 1, 1, 1), (b"other", 1, 1, 1, 1)], [], 1), IGNORE)
    listing = reconcile.DirListing(b"", None, IGNORE, errors=[WalkError(b"locked", "permission denied")])
    assert comparer.feed(listing) == []
    assert comparer.finish() == []
    assert comparer.diff.vanished == [b"other"]
