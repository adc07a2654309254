"""Symlink classification and repair on real symlink farms, with a scripted catalog."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import blake3
import pytest

import importd.maintenance.links as links_module
from importd.maintenance.links import (
    FOLDER_MOVED,
    MOVED,
    SAME_CONTENT,
    SAME_NAME,
    SAME_NAME_AND_CONTENT,
    SAME_NAME_AND_SIZE,
    Candidate,
    LastKnown,
    LinkClassifier,
    LinkError,
    LinkInfo,
    LinkProposal,
    Move,
    RepairFailure,
    RepairResult,
    apply_repair,
    classify_link,
    new_target_for,
    propose_repair,
    stale_reason,
    swap_in,
)


class FakeCatalog:
    """The four catalog questions, answered from lists a test fills in."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, Move]] = []
        self.known: dict[tuple[str, bytes], LastKnown] = {}
        self.files: list[tuple[bytes, int, str]] = []
        self.asked: list[tuple[str, bytes]] = []

    def add_file(self, path: bytes) -> None:
        with open(path, "rb") as fh:
            data = fh.read()
        self.files.append((path, len(data), blake3.blake3(data).hexdigest()))

    def moved(self, root: str, old_relpath: bytes, current: bytes, at: float = 1.0) -> None:
        self.moves.append((root, Move(old_relpath, current, at)))

    def moves_from(self, root_name: str, relpath: bytes) -> Sequence[Move]:
        self.asked.append((root_name, relpath))
        return [
            m
            for r, m in self.moves
            if r == root_name and (m.old_relpath == relpath or m.old_relpath.startswith(relpath + b"/"))
        ]

    def last_known(self, root_name: str, relpath: bytes) -> LastKnown | None:
        return self.known.get((root_name, relpath))

    def by_name_and_size(self, name: bytes, size: int | None) -> Sequence[bytes]:
        return [p for p, s, _ in self.files if os.path.basename(p) == name and (size is None or s == size)]

    def by_hash(self, digest: str) -> Sequence[bytes]:
        return [p for p, _, h in self.files if h == digest]


def b(path: Path) -> bytes:
    return os.fsencode(str(path))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


def classify(root: Path, relpath: bytes) -> LinkInfo:
    info = classify_link({"media": b(root)}, "media", relpath)
    assert isinstance(info, LinkInfo), info
    return info


def repaired(proposal: LinkProposal) -> RepairResult:
    assert proposal.action == "repair", proposal
    result = apply_repair(proposal, proposal.candidates[0])
    assert isinstance(result, RepairResult), result
    return result


def test_states_ok_broken_loop_outside(media: Path, tmp_path: Path) -> None:
    write(media / "d" / "f.mkv", b"x")
    write(tmp_path / "elsewhere.txt", b"x")
    os.symlink("d/f.mkv", media / "ok")
    os.symlink("d", media / "to_dir")
    os.symlink("d/gone.mkv", media / "broken")
    os.symlink("self", media / "self")
    os.symlink("b", media / "a")
    os.symlink("a", media / "b")
    os.symlink(str(tmp_path / "elsewhere.txt"), media / "out")
    os.symlink(str(tmp_path / "nowhere.txt"), media / "out_broken")

    ok = classify(media, b"ok")
    assert (ok.state, ok.target_root, ok.target_relpath, ok.target_exists) == (
        "ok",
        "media",
        b"d/f.mkv",
        True,
    )
    assert ok.target_as_written == b"d/f.mkv"
    assert classify(media, b"to_dir").state == "ok"
    broken = classify(media, b"broken")
    assert (broken.state, broken.target_relpath, broken.target_exists) == ("broken", b"d/gone.mkv", False)
    assert broken.resolved == os.path.realpath(b(media)) + b"/d/gone.mkv"
    for name in (b"self", b"a", b"b"):
        loop = classify(media, name)
        assert (loop.state, loop.resolved) == ("loop", None)
    out = classify(media, b"out")
    assert (out.state, out.target_root, out.target_exists) == ("outside-roots", None, True)
    out_broken = classify(media, b"out_broken")
    assert (out_broken.state, out_broken.target_exists) == ("outside-roots", False)

    catalog = FakeCatalog()
    assert propose_repair(ok, catalog).action == "skip"
    assert propose_repair(out, catalog).action == "skip"
    loop_proposal = propose_repair(classify(media, b"self"), catalog)
    assert (loop_proposal.action, loop_proposal.candidates) == ("skip", [])
    assert "loop" in loop_proposal.note
    assert "outside" in propose_repair(out_broken, catalog).note
    assert catalog.asked == []  # nothing to ask about links that are fine, loops or outside


def test_link_into_another_root_and_nested_roots(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "inner"
    write(inner / "x.mkv", b"x")
    write(tmp_path / "archive" / "y.mkv", b"y")
    os.symlink("inner/x.mkv", outer / "l1")
    os.symlink("../archive/y.mkv", outer / "l2")
    roots = {"outer": b(outer), "inner": b(inner), "archive": b(tmp_path / "archive")}
    classifier = LinkClassifier(roots)
    l1 = classifier.classify("outer", b"l1")
    l2 = classifier.classify("outer", b"l2")
    assert isinstance(l1, LinkInfo) and isinstance(l2, LinkInfo)
    assert (l1.target_root, l1.target_relpath) == ("inner", b"x.mkv")
    assert (l2.target_root, l2.target_relpath) == ("archive", b"y.mkv")


def test_not_a_link_or_gone_is_an_error_value(media: Path) -> None:
    write(media / "plain", b"x")
    roots = {"media": b(media)}
    plain = classify_link(roots, "media", b"plain")
    gone = classify_link(roots, "media", b"nothing")
    unknown = classify_link(roots, "nope", b"plain")
    assert isinstance(plain, LinkError) and plain.reason == "no longer a symlink"
    assert isinstance(gone, LinkError) and gone.reason == "gone"
    assert isinstance(unknown, LinkError) and "unknown root" in unknown.reason


def test_folder_renamed_under_links_pointing_into_it(media: Path) -> None:
    old = media / "library" / "old" / "dir"
    write(old / "a.mkv", b"aaaa")
    write(old / "b.mkv", b"bbbbbb")
    write(old / "notes.nfo", b"not in the catalog")
    (media / "farm").mkdir()
    os.symlink("../library/old/dir/a.mkv", media / "farm" / "rel_a")
    os.symlink(str(old / "b.mkv"), media / "farm" / "abs_b")
    os.symlink("../library/old/dir", media / "farm" / "folder")
    os.symlink("../library/old/dir/notes.nfo", media / "farm" / "notes")
    (media / "library" / "new").mkdir()
    os.rename(old, media / "library" / "new" / "dir")
    new = media / "library" / "new" / "dir"
    # What move detection recorded for the catalogued files (same inodes at new paths).
    catalog = FakeCatalog()
    catalog.moved("media", b"library/old/dir/a.mkv", b(new / "a.mkv"))
    catalog.moved("media", b"library/old/dir/b.mkv", b(new / "b.mkv"))

    links = {name: classify(media, b"farm/" + name) for name in (b"rel_a", b"abs_b", b"folder", b"notes")}
    assert {info.state for info in links.values()} == {"broken"}
    proposals = {name: propose_repair(info, catalog) for name, info in links.items()}
    assert proposals[b"rel_a"].candidates == [Candidate(b(new / "a.mkv"), MOVED)]
    assert proposals[b"abs_b"].candidates == [Candidate(b(new / "b.mkv"), MOVED)]
    assert proposals[b"folder"].candidates == [Candidate(b(new), FOLDER_MOVED)]
    assert proposals[b"notes"].candidates == [Candidate(b(new / "notes.nfo"), FOLDER_MOVED)]

    results = {name: repaired(p) for name, p in proposals.items()}
    farm = media / "farm"
    assert os.readlink(farm / "rel_a") == "../library/new/dir/a.mkv"  # relative stays relative
    assert os.readlink(farm / "abs_b") == str(new / "b.mkv")  # absolute stays absolute
    assert os.readlink(farm / "folder") == "../library/new/dir"
    assert (farm / "rel_a").read_bytes() == b"aaaa"
    assert (farm / "abs_b").read_bytes() == b"bbbbbb"
    assert (farm / "folder" / "a.mkv").read_bytes() == b"aaaa"
    assert (farm / "notes").read_bytes() == b"not in the catalog"
    assert results[b"rel_a"].old_target == b"../library/old/dir/a.mkv"
    assert results[b"rel_a"].new_target == b"../library/new/dir/a.mkv"
    assert sorted(os.listdir(farm)) == ["abs_b", "folder", "notes", "rel_a"]  # no temporary left
    assert {classify(media, b"farm/" + n).state for n in links} == {"ok"}


def test_file_renamed_by_move_history_and_by_name(media: Path) -> None:
    write(media / "lib" / "y.mkv", b"yyy")
    write(media / "other" / "z.mkv", b"zz")
    (media / "farm").mkdir()
    os.symlink("../lib/x.mkv", media / "farm" / "x")
    os.symlink("../gone/z.mkv", media / "farm" / "z")
    catalog = FakeCatalog()
    catalog.moved("media", b"lib/x.mkv", b(media / "lib" / "y.mkv"))
    catalog.add_file(b(media / "lib" / "y.mkv"))
    catalog.add_file(b(media / "other" / "z.mkv"))

    x = propose_repair(classify(media, b"farm/x"), catalog)
    assert x.candidates == [Candidate(b(media / "lib" / "y.mkv"), MOVED)]
    assert repaired(x).new_target == b"../lib/y.mkv"
    assert (media / "farm" / "x").read_bytes() == b"yyy"

    # No move history (the file moved while the daemon was stopped): a unique same name will do.
    z_info = classify(media, b"farm/z")
    assert propose_repair(z_info, catalog).candidates == [Candidate(b(media / "other" / "z.mkv"), SAME_NAME)]
    catalog.known[("media", b"gone/z.mkv")] = LastKnown(size=2, blake3=None)
    z = propose_repair(z_info, catalog)
    assert z.candidates == [Candidate(b(media / "other" / "z.mkv"), SAME_NAME_AND_SIZE)]
    catalog.known[("media", b"gone/z.mkv")] = LastKnown(size=999, blake3=None)
    assert propose_repair(z_info, catalog).action == "trash"  # same name, other size: not that file


def test_latest_move_out_of_a_path_wins(media: Path) -> None:
    write(media / "first.mkv", b"1")
    write(media / "second.mkv", b"2")
    os.symlink("slot.mkv", media / "l")
    catalog = FakeCatalog()
    catalog.moved("media", b"slot.mkv", b(media / "first.mkv"), at=10.0)
    catalog.moved("media", b"slot.mkv", b(media / "second.mkv"), at=20.0)
    assert propose_repair(classify(media, b"l"), catalog).candidates == [
        Candidate(b(media / "second.mkv"), MOVED)
    ]


def test_moved_file_since_deleted_falls_back_to_content(media: Path) -> None:
    write(media / "copy" / "renamed.bin", b"content")
    os.symlink("orig.bin", media / "l")
    catalog = FakeCatalog()
    catalog.moved("media", b"orig.bin", b(media / "moved" / "orig.bin"))  # gone from disk since
    catalog.add_file(b(media / "copy" / "renamed.bin"))
    catalog.known[("media", b"orig.bin")] = LastKnown(7, blake3.blake3(b"content").hexdigest())
    proposal = propose_repair(classify(media, b"l"), catalog)
    assert proposal.candidates == [Candidate(b(media / "copy" / "renamed.bin"), SAME_CONTENT)]


def test_two_equal_candidates_are_listed_not_guessed(media: Path) -> None:
    write(media / "a" / "cover.jpg", b"same")
    write(media / "b" / "cover.jpg", b"same")
    os.symlink("old/cover.jpg", media / "l")
    catalog = FakeCatalog()
    catalog.add_file(b(media / "a" / "cover.jpg"))
    catalog.add_file(b(media / "b" / "cover.jpg"))
    catalog.known[("media", b"old/cover.jpg")] = LastKnown(4, blake3.blake3(b"same").hexdigest())
    proposal = propose_repair(classify(media, b"l"), catalog)
    assert proposal.action == "skip"
    assert sorted(c.path for c in proposal.candidates) == [
        b(media / "a" / "cover.jpg"),
        b(media / "b" / "cover.jpg"),
    ]
    assert "2 candidates" in proposal.note
    assert os.readlink(media / "l") == "old/cover.jpg"  # proposing changes nothing
    # The operator picks one: that applies.
    chosen = proposal.candidates[1]
    result = apply_repair(proposal, chosen)
    assert isinstance(result, RepairResult)
    assert os.path.realpath(media / "l") == os.path.realpath(os.fsdecode(chosen.path))


def test_same_name_narrowed_by_content(media: Path) -> None:
    write(media / "a" / "cover.jpg", b"one")
    write(media / "b" / "cover.jpg", b"two")
    os.symlink("old/cover.jpg", media / "l")
    catalog = FakeCatalog()
    catalog.add_file(b(media / "a" / "cover.jpg"))
    catalog.add_file(b(media / "b" / "cover.jpg"))
    catalog.known[("media", b"old/cover.jpg")] = LastKnown(3, blake3.blake3(b"two").hexdigest())
    proposal = propose_repair(classify(media, b"l"), catalog)
    assert proposal.candidates == [Candidate(b(media / "b" / "cover.jpg"), SAME_NAME_AND_CONTENT)]


def test_many_candidates_are_capped(media: Path) -> None:
    catalog = FakeCatalog()
    for i in range(15):
        catalog.add_file(b(write(media / f"d{i}" / "x.txt", b"x")))
    os.symlink("gone/x.txt", media / "l")
    proposal = propose_repair(classify(media, b"l"), catalog, limit=5)
    assert (proposal.action, len(proposal.candidates)) == ("skip", 5)
    assert "15 candidates" in proposal.note and "first 5" in proposal.note


def test_target_deleted_is_an_orphan(media: Path) -> None:
    os.symlink("deleted.mkv", media / "l")
    proposal = propose_repair(classify(media, b"l"), FakeCatalog())
    assert (proposal.action, proposal.candidates) == ("trash", [])
    assert proposal.to_json() == {
        "link": str(media / "l"),
        "old_target": "deleted.mkv",
        "candidates": [],
        "action": "trash",
        "state": "broken",
        "note": "no candidate: orphan",
    }


def test_link_to_a_broken_link_mends_the_last_one(media: Path) -> None:
    write(media / "new" / "f.mkv", b"f")
    os.symlink("l2", media / "l1")
    os.symlink("old/f.mkv", media / "l2")
    catalog = FakeCatalog()
    catalog.moved("media", b"old/f.mkv", b(media / "new" / "f.mkv"))
    first = propose_repair(classify(media, b"l1"), catalog)
    assert first.action == "skip" and "another link" in first.note
    repaired(propose_repair(classify(media, b"l2"), catalog))
    assert classify(media, b"l1").state == "ok"


def test_relative_target_through_a_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "media"
    write(real / "lib" / "new.mkv", b"n")
    write(tmp_path / "archive" / "kept.mkv", b"k")
    (tmp_path / "mnt").mkdir()
    os.symlink(real, tmp_path / "mnt" / "media")
    (real / "deep" / "farm").mkdir(parents=True)
    os.symlink("../../lib/old.mkv", real / "deep" / "farm" / "l")
    os.symlink("../../../../archive/gone.mkv", real / "deep" / "farm" / "l2")
    roots = {"media": b(tmp_path / "mnt" / "media"), "archive": b(tmp_path / "archive")}
    catalog = FakeCatalog()
    # The catalog speaks in configured (logical) paths, through the symlinked root.
    catalog.moved("media", b"lib/old.mkv", b(tmp_path / "mnt" / "media" / "lib" / "new.mkv"))
    catalog.moved("archive", b"gone.mkv", b(tmp_path / "archive" / "kept.mkv"))
    classifier = LinkClassifier(roots)
    for name, expected in ((b"l", b"../../lib/new.mkv"), (b"l2", b"../../../../archive/kept.mkv")):
        info = classifier.classify("media", b"deep/farm/" + name)
        assert isinstance(info, LinkInfo) and info.state == "broken", info
        result = repaired(propose_repair(info, catalog))
        assert result.new_target == expected
    assert (real / "deep" / "farm" / "l2").read_bytes() == b"k"


def test_new_target_for_keeps_the_kind_of_link(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    link = b(tmp_path / "a" / "b" / "l")
    dest = b(tmp_path / "c" / "f")
    assert new_target_for(link, b"/old/abs", dest) == dest
    assert new_target_for(link, b"old/rel", dest) == b"../../c/f"


def test_stale_when_the_target_is_back(media: Path) -> None:
    write(media / "new.mkv", b"n")
    os.symlink("old.mkv", media / "l")
    catalog = FakeCatalog()
    catalog.moved("media", b"old.mkv", b(media / "new.mkv"))
    proposal = propose_repair(classify(media, b"l"), catalog)
    write(media / "old.mkv", b"back again")
    result = apply_repair(proposal, proposal.candidates[0])
    assert isinstance(result, RepairFailure) and result.stale
    assert result.reason == "stale: the link works again"
    assert os.readlink(media / "l") == "old.mkv"


def test_stale_when_the_link_changed_or_went_or_the_candidate_went(media: Path) -> None:
    write(media / "new.mkv", b"n")
    catalog = FakeCatalog()
    catalog.moved("media", b"old.mkv", b(media / "new.mkv"))

    def fresh() -> LinkProposal:
        if os.path.lexists(media / "l"):
            os.unlink(media / "l")
        os.symlink("old.mkv", media / "l")
        return propose_repair(classify(media, b"l"), catalog)

    proposal = fresh()
    os.unlink(media / "l")
    os.symlink("other.mkv", media / "l")
    assert stale_reason(proposal) == "stale: the link now points to other.mkv"
    failure = apply_repair(proposal, proposal.candidates[0])
    assert isinstance(failure, RepairFailure) and failure.stale
    assert os.readlink(media / "l") == "other.mkv"

    proposal = fresh()
    os.unlink(media / "l")
    assert stale_reason(proposal) == "stale: the link is gone"
    assert not os.path.lexists(media / "l")

    proposal = fresh()
    os.unlink(media / "l")
    write(media / "l", b"a file now")
    assert stale_reason(proposal) == "stale: no longer a symlink"
    os.unlink(media / "l")

    proposal = fresh()
    os.rename(media / "new.mkv", media / "elsewhere.mkv")
    failure = apply_repair(proposal, proposal.candidates[0])
    assert isinstance(failure, RepairFailure) and failure.reason.startswith("stale: the candidate")
    assert os.readlink(media / "l") == "old.mkv"
    assert stale_reason(proposal) is None  # the link itself still matches the proposal


def test_only_broken_links_are_repaired(media: Path) -> None:
    write(media / "f", b"f")
    os.symlink("f", media / "ok")
    info = classify(media, b"ok")
    proposal = LinkProposal(info, info.target_as_written, [], "skip")
    failure = apply_repair(proposal, Candidate(b(media / "f"), "test"))
    assert isinstance(failure, RepairFailure) and "only broken links" in failure.reason


def test_raw_byte_names(media: Path) -> None:
    root = b(media)
    os.mkdir(root + b"/new\xe9")
    with open(root + b"/new\xe9/f\nx", "wb") as fh:
        fh.write(b"raw")
    os.symlink(b"old\xe9/f\nx", root + b"/l\xff")
    catalog = FakeCatalog()
    catalog.moved("media", b"old\xe9/f\nx", root + b"/new\xe9/f\nx")
    info = classify(media, b"l\xff")
    assert info.target_relpath == b"old\xe9/f\nx"
    result = repaired(propose_repair(info, catalog))
    assert result.new_target == b"new\xe9/f\nx"
    assert os.readlink(root + b"/l\xff") == b"new\xe9/f\nx"


def test_an_empty_root_is_not_a_reason_to_trash(tmp_path: Path) -> None:
    (tmp_path / "farm").mkdir()
    (tmp_path / "disk").mkdir()  # the mount point of a disk that is not mounted
    os.symlink("../disk/film.mkv", tmp_path / "farm" / "l")
    roots = {"farm": b(tmp_path / "farm"), "disk": b(tmp_path / "disk")}
    info = classify_link(roots, "farm", b"l")
    assert isinstance(info, LinkInfo) and info.state == "broken"
    proposal = propose_repair(info, FakeCatalog())
    assert proposal.action == "skip" and "not mounted" in proposal.note
    write(tmp_path / "disk" / "other.mkv", b"o")
    assert propose_repair(info, FakeCatalog()).action == "trash"


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_never_overwrites_what_replaced_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # a filesystem without RENAME_EXCHANGE: check, then rename
        monkeypatch.setattr(links_module, "_exchange", lambda a, b: False)
    os.symlink("new-target", tmp_path / "new")
    write(tmp_path / "path", b"a file written where the link was")
    reason = swap_in(b(tmp_path / "new"), b(tmp_path / "path"), b"old-target")
    assert reason is not None and reason.startswith("stale:")
    assert (tmp_path / "path").read_bytes() == b"a file written where the link was"
    assert os.readlink(tmp_path / "new") == "new-target"
    os.unlink(tmp_path / "path")
    os.symlink("old-target", tmp_path / "path")
    assert swap_in(b(tmp_path / "new"), b(tmp_path / "path"), b"old-target") is None
    assert os.readlink(tmp_path / "path") == "new-target"
    assert not os.path.lexists(tmp_path / "new")
