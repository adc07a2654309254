"""Generate a realistic legacy tree for the scale benchmark (`make bench-tree`, bench/scale.py).

Deterministic for a given set of parameters (one seeded PRNG drives every choice), and by default
1,000,000 regular files over deep and wide folders:

- Archive/: most of the files, tiny (0-16 KiB, mostly a few KiB), in folders up to nine levels
  deep, a few of them holding thousands of files; names with spaces and accents (some decomposed,
  as macOS writes them) and some that are not UTF-8 at all (latin-1 bytes from an old share);
- Characters/{character}/{scene}.mp4 with a {scene}.json sidecar, metadata.json and source.jpg,
  some scenes left out (gaps);
- Films/Title (Year)/Title (Year).mkv with its NFO, and Séries/Show/Saison N/Show - S01E02.mkv,
  a few episodes left out (gaps);
- Sauvegarde 2019/: exact copies of files found elsewhere (duplicates);
- Liens/: symlink farms, folders of relative links to files elsewhere, a few of them dangling;
- Rushes/: a few huge files (default 3 x 256 MiB);
- a few partial downloads (*.part), which importd ignores.

Beside the tree (`<base>/root`) it writes `<base>/importd-roots.toml`, a config fragment with the
root, its path rules (the shipped `characters` set under Characters/ and the `films-series` set,
read from importd's package) and the expectations behind the gap report; append it to a config
that has no [[roots]] of its own. `<base>/stamp.json` is written last: the parameters and what was
made. A second run with the same parameters finds the stamp and reuses the tree; other parameters
(or `--force`) replace it.

Content is fast to make: one random buffer of 32 MiB, sliced at a varying offset per file, behind
a header naming the file (so every file differs unless it is meant to be a copy), written with
one writev per file into an open directory descriptor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

BUFFER_BYTES = 32 << 20
HUGE_BLOCK = 16 << 20
TINY_MAX = 16 << 10
STAMP = "stamp.json"
FRAGMENT = "importd-roots.toml"
ROOT = "root"
ROOT_NAME = "bench"
STAMP_VERSION = 1  # bump when the layout changes, so old trees are made again

# Shares of the regular files; Archive/ takes the rest.
CHARACTER_SHARE = 0.04
FILM_SHARE = 0.015
EPISODE_SHARE = 0.03
DUPLICATE_SHARE = 0.03
LINK_SHARE = 0.01  # symlinks, beside the regular files
DANGLING_SHARE = 0.02  # of the symlinks
NON_UTF8_SHARE = 0.005
PART_EVERY = 100_000  # one partial download per this many files

SCENES = ("intro", "dance", "outro", "walk", "talk")
EXPECTED_SCENES = ("intro", "dance", "outro")
FIRST = ("Élodie", "Zoé", "Amélie", "Jérôme", "Noël", "Hélène", "François", "Anaïs", "Loïc", "Marc")
LAST = ("Martin", "Lefèvre", "Girard", "Mercier", "Dupré", "Rousseau", "Faure", "Chevalier")
FILM_TITLES = ("Le Dîner de cons", "La Haine", "Les Choristes", "Playtime", "Jour de fête", "Dune")
SHOWS = ("Kaamelott", "Engrenages", "Le Bureau des légendes", "Dix pour cent", "Lupin", "Caméra café")
FOLDER_WORDS = (
    "Projets", "Clients", "Année 2003", "Compta", "Photos été", "Réunions", "Divers", "à trier",
    "Ancien serveur", "Scans", "Montage", "Son", "Export final", "Version définitive", "Archives 1998",
    "Dossier partagé", "Élèves", "Budget prévisionnel", "Maquettes", "Études",
)  # fmt: skip
FILE_WORDS = ("facture", "scan", "IMG", "Compte rendu", "réunion", "note", "Capture d’écran", "devis")
EXTENSIONS = (".txt", ".pdf", ".doc", ".jpg", ".xls", ".wav", ".bin", ".odt")
LATIN1_WORDS = ("r\xe9union", "ann\xe9e", "\xe9t\xe9", "caf\xe9", "pr\xeat", "no\xebl")


@dataclass(frozen=True)
class TreeParams:
    files: int = 1_000_000
    huge: int = 3
    huge_mib: int = 256
    seed: int = 21

    def as_dict(self) -> dict[str, int]:
        return {"version": STAMP_VERSION, **asdict(self)}


@dataclass
class TreeSummary:
    """What was made; the stamp holds it, the bench reads it."""

    root: str
    fragment: str
    files: int = 0  # regular files
    catalogued: int = 0  # regular files importd registers (the *.part ones are ignored)
    ignored: int = 0
    bytes: int = 0
    folders: int = 0
    duplicates: int = 0
    symlinks: int = 0
    dangling: int = 0
    non_utf8: int = 0
    characters: int = 0
    films: int = 0
    shows: int = 0
    episodes: int = 0
    huge: list[str] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)  # UTF-8 relative paths, for digest checks
    generate_s: float = 0.0


def default_base(files: int) -> Path:
    return Path(os.environ.get("TMPDIR") or "/var/tmp") / f"importd-bench-tree-{files}"


# ----- content -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """A file's bytes, named by (ident, size, offset): two files with the same Content are copies."""

    ident: int
    size: int
    offset: int


class Blocks:
    """One random buffer, sliced: the header (the content's ident) makes each slice unique."""

    def __init__(self, rng: random.Random) -> None:
        self.view = memoryview(rng.randbytes(BUFFER_BYTES))

    def parts(self, content: Content) -> list[bytes | memoryview]:
        head = content.ident.to_bytes(8, "little")
        if content.size <= len(head):
            return [head[: content.size]]
        return [head, self.view[content.offset : content.offset + content.size - len(head)]]

    def write_huge(self, path: bytes, ident: int, nbytes: int) -> None:
        """Large blocks, each behind its own header (the file's ident and the block's number)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            written, n = 0, 0
            while written < nbytes:
                chunk = min(HUGE_BLOCK, nbytes - written)
                offset = (n * 7919 * 4096 + ident * 104729) % (BUFFER_BYTES - HUGE_BLOCK)
                head = ident.to_bytes(8, "little") + n.to_bytes(8, "little")
                written += os.writev(fd, [head, self.view[offset : offset + chunk - len(head)]])
                n += 1
        finally:
            os.close(fd)


class TreeWriter:
    """Files written into one open folder at a time, by name relative to its descriptor."""

    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

    def __init__(self, root: bytes, blocks: Blocks, summary: TreeSummary) -> None:
        self.root = root
        self.blocks = blocks
        self.summary = summary
        self.folders: set[bytes] = set()

    def mkdir(self, rel: bytes) -> bytes:
        path = os.path.join(self.root, rel)
        if rel not in self.folders:
            os.makedirs(path, exist_ok=True)
            parent = rel
            while parent and parent not in self.folders:
                self.folders.add(parent)
                parent = os.path.dirname(parent)
        return path

    def folder(self, rel: bytes) -> int:
        return os.open(self.mkdir(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def write(self, dir_fd: int, name: bytes, content: Content) -> None:
        fd = os.open(name, self.FLAGS, 0o644, dir_fd=dir_fd)
        try:
            os.writev(fd, self.blocks.parts(content))
        finally:
            os.close(fd)
        self.summary.files += 1
        self.summary.bytes += content.size

    def text(self, dir_fd: int, name: bytes, data: bytes) -> None:
        fd = os.open(name, self.FLAGS, 0o644, dir_fd=dir_fd)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.summary.files += 1
        self.summary.bytes += len(data)

    def files(self, rel: bytes, entries: Sequence[tuple[bytes, Content | bytes]]) -> None:
        dir_fd = self.folder(rel)
        try:
            for name, what in entries:
                if isinstance(what, Content):
                    self.write(dir_fd, name, what)
                else:
                    self.text(dir_fd, name, what)
        finally:
            os.close(dir_fd)


# ----- the tree --------------------------------------------------------------------------------


class Generator:
    def __init__(self, root: Path, params: TreeParams, fragment: Path) -> None:
        self.params = params
        self.rng = random.Random(params.seed)
        self.blocks = Blocks(self.rng)
        self.summary = TreeSummary(root=str(root), fragment=str(fragment))
        self.out = TreeWriter(os.fsencode(root), self.blocks, self.summary)
        self.next_ident = 1
        # Contents that may be copied elsewhere, and files that links may point at.
        self.copyable: list[tuple[bytes, Content]] = []
        self.linkable: list[bytes] = []
        self.last_report = 0

    def content(self, size: int | None = None) -> Content:
        if size is None:
            size = self.tiny_size()
        self.next_ident += 1
        offset = self.rng.randrange(BUFFER_BYTES - TINY_MAX)
        return Content(self.next_ident, size, offset)

    def tiny_size(self) -> int:
        """0 to 16 KiB, mostly a few KiB (log-normal around 2.5 KiB), a few empty files."""
        if self.rng.random() < 0.003:
            return 0
        return min(TINY_MAX, int(self.rng.lognormvariate(7.8, 0.9)))

    def spell(self, name: str) -> str:
        """As legacy trees spell names: mostly composed, sometimes decomposed (macOS)."""
        return unicodedata.normalize("NFD", name) if self.rng.random() < 0.1 else name

    def progress(self) -> None:
        done = self.summary.files
        if done - self.last_report >= 100_000:
            self.last_report = done
            print(f"bench-tree: {done:,} files", file=sys.stderr, flush=True)

    def remember(self, rel: bytes, content: Content) -> None:
        roll = self.rng.random()
        if roll < 0.05:
            self.copyable.append((rel, content))
        elif roll < 0.06:
            self.linkable.append(rel)

    def put(self, folder: bytes, entries: list[tuple[bytes, Content | bytes]], left: int) -> int:
        """A folder's files, as many as the section has `left`; how many."""
        entries = entries[:left]
        if entries:
            self.out.files(folder, entries)
        return len(entries)

    # -- sections --

    def characters(self, files: int) -> None:
        made = 0
        index = 0
        while made < files:
            name = self.spell(f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)} {index}")
            folder = os.fsencode(f"Characters/{name}")
            entries: list[tuple[bytes, Content | bytes]] = [
                (b"metadata.json", json.dumps({"name": name, "age": self.rng.randint(18, 80)}).encode()),
                (b"source.jpg", self.content()),
            ]
            for scene in self.rng.sample(SCENES, self.rng.randint(2, len(SCENES))):
                video = self.content()
                entries.append((f"{scene}.mp4".encode(), video))
                tags = self.rng.sample(["night", "day", "studio", "outdoor", "rain"], 2)
                entries.append((f"{scene}.json".encode(), json.dumps({"tags": tags}).encode()))
                self.remember(folder + f"/{scene}.mp4".encode(), video)
            made += self.put(folder, entries, files - made)
            index += 1
        self.summary.characters = index

    def films(self, files: int) -> None:
        made = 0
        index = 0
        while made < files:
            title = f"{self.rng.choice(FILM_TITLES)} {index} ({self.rng.randint(1950, 2024)})"
            folder = os.fsencode(self.spell(f"Films/{title}"))
            nfo = (
                f"<?xml version='1.0' encoding='utf-8'?>\n<movie><title>{title[:-7]}</title>"
                f"<year>{title[-5:-1]}</year></movie>\n"
            ).encode()
            video = self.content()
            entries: list[tuple[bytes, Content | bytes]] = [
                (f"{title}.mkv".encode(), video),
                (f"{title}.nfo".encode(), nfo),
            ]
            if index % PART_EVERY == 0:  # a download that never finished
                entries.append((f"{title}.mkv.part".encode(), self.content()))
                self.summary.ignored += 1
            made += self.put(folder, entries, files - made)
            self.linkable.append(folder + f"/{title}.mkv".encode())
            index += 1
        self.summary.films = index

    def series(self, files: int) -> None:
        made = 0
        index = 0
        while made < files:
            show = f"{self.rng.choice(SHOWS)} {index}"
            for season in range(1, self.rng.randint(1, 5) + 1):
                folder = os.fsencode(f"Séries/{show}/Saison {season}")
                entries: list[tuple[bytes, Content | bytes]] = []
                for episode in range(1, self.rng.randint(6, 12) + 1):
                    if self.rng.random() < 0.02:
                        continue  # a missing episode: a gap
                    name = f"{show} - S{season:02d}E{episode:02d}.mkv".encode()
                    entries.append((name, self.content()))
                put = self.put(folder, entries, files - made)
                made += put
                self.summary.episodes += put
                if made >= files:
                    break
            index += 1
        self.summary.shows = index

    def archive(self, files: int) -> None:
        """Folders grown at random up to nine levels deep: most hold tens of files, a few
        thousands."""
        folders: list[tuple[bytes, int]] = [(b"Archive", 0)]
        made = 0
        while made < files:
            parent, depth = self.rng.choice(folders[-50:]) if self.rng.random() < 0.7 else folders[0]
            if depth >= 8:
                parent, depth = folders[0]
            word = self.rng.choice(FOLDER_WORDS)
            if self.rng.random() < NON_UTF8_SHARE:
                name = f"{self.rng.choice(LATIN1_WORDS)} {len(folders)}".encode("latin-1")
                self.summary.non_utf8 += 1
            else:
                name = os.fsencode(self.spell(f"{word} {len(folders)}"))
            rel = parent + b"/" + name
            folders.append((rel, depth + 1))
            wide = self.rng.random() < 0.005
            count = self.rng.randint(2_000, 10_000) if wide else self.rng.randint(5, 80)
            count = min(count, files - made)
            entries: list[tuple[bytes, Content | bytes]] = []
            for i in range(count):
                stem = self.rng.choice(FILE_WORDS)
                ext = self.rng.choice(EXTENSIONS)
                if self.rng.random() < NON_UTF8_SHARE:
                    file_name = f"{self.rng.choice(LATIN1_WORDS)} {i:05d}{ext}".encode("latin-1")
                    self.summary.non_utf8 += 1
                else:
                    file_name = os.fsencode(f"{stem} {i:05d}{ext}")
                content = self.content()
                entries.append((file_name, content))
                self.remember(rel + b"/" + file_name, content)
            self.out.files(rel, entries)
            made += count
            self.progress()

    def duplicates(self, files: int) -> None:
        """Copies of earlier files under a backup folder, keeping their relative paths."""
        picks = self.rng.sample(self.copyable, min(files, len(self.copyable)))
        by_folder: dict[bytes, list[tuple[bytes, Content | bytes]]] = {}
        for rel, content in picks:
            folder, name = os.path.split(rel)
            by_folder.setdefault(b"Sauvegarde 2019/" + folder, []).append((name, content))
        for folder, entries in by_folder.items():
            self.out.files(folder, entries)
        self.summary.duplicates = len(picks)

    def links(self, count: int) -> None:
        """Folders of relative symlinks (by letter), a few pointing at nothing."""
        if not self.linkable:
            return
        root = self.out.root
        for i in range(count):
            target = self.rng.choice(self.linkable)
            folder = b"Liens/" + (os.path.basename(target)[:1] or b"_").upper()
            self.out.mkdir(folder)
            if self.rng.random() < DANGLING_SHARE:
                target = target + b".gone"
                self.summary.dangling += 1
            relative = os.path.relpath(os.path.join(root, target), os.path.join(root, folder))
            os.symlink(relative, os.path.join(root, folder, b"%d " % i + os.path.basename(target)))
        self.summary.symlinks = count

    def huge(self) -> None:
        p = self.params
        for i in range(p.huge):
            rel = os.fsencode(f"Rushes/Tournage {i + 1}/rush {i + 1:02d}.mxf")
            self.out.mkdir(os.path.dirname(rel))
            self.next_ident += 1
            self.blocks.write_huge(os.path.join(self.out.root, rel), self.next_ident, p.huge_mib << 20)
            self.summary.files += 1
            self.summary.bytes += p.huge_mib << 20
            self.summary.huge.append(os.fsdecode(rel))

    def run(self) -> TreeSummary:
        n = self.params.files
        started = time.perf_counter()
        self.huge()
        left = n - self.params.huge
        shares = [int(left * s) for s in (CHARACTER_SHARE, FILM_SHARE, EPISODE_SHARE, DUPLICATE_SHARE)]
        self.characters(shares[0])
        self.films(shares[1])
        self.series(shares[2])
        # The archive first holds what is not a copy; the copies come from it and the videos.
        self.archive(max(0, left - sum(shares)))
        self.duplicates(shares[3])
        self.archive(max(0, n - self.summary.files))  # what the sections' rounding left
        self.links(int(n * LINK_SHARE))
        self.summary.folders = len(self.out.folders)
        self.summary.catalogued = self.summary.files - self.summary.ignored
        self.summary.sample = self.sample()
        self.summary.generate_s = round(time.perf_counter() - started, 1)
        return self.summary

    def sample(self) -> list[str]:
        """A few files across the sections with UTF-8 names, for digest checks."""
        picked: list[str] = list(self.summary.huge[:1])
        for rel, _ in self.copyable[:: max(1, len(self.copyable) // 4)][:4]:
            try:
                picked.append(rel.decode())
            except UnicodeDecodeError:
                continue
        return picked


# ----- the fragment ------------------------------------------------------------------------------


def shipped_rules(name: str, prefix: str = "") -> list[dict[str, Any]]:
    """A shipped rule set's rule tables, each pattern under `prefix`."""
    text = resources.files("importd.entities").joinpath("rulesets", f"{name}.toml").read_text("utf-8")
    rules: list[dict[str, Any]] = tomllib.loads(text)["rules"]
    return [{**rule, "pattern": prefix + rule["pattern"]} for rule in rules]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)  # strings, numbers and string lists are valid TOML


def fragment_text(root: Path) -> str:
    rules = shipped_rules("characters", "Characters/") + shipped_rules("films-series")
    lines = [
        "# Written by tools/bench_tree.py beside its tree: append it to a config with no [[roots]].",
        "[expect.character]",
        f"attributes = {toml_value(['age'])}",
        f"scenes = {toml_value(list(EXPECTED_SCENES))}",
        "[expect.series]",
        'episodes = "contiguous"',
        "",
        "[[roots]]",
        f"name = {toml_value(ROOT_NAME)}",
        f"path = {toml_value(str(root))}",
    ]
    for rule in rules:
        lines += ["", "[[roots.rules]]"] + [f"{key} = {toml_value(value)}" for key, value in rule.items()]
    return "\n".join(lines) + "\n"


# ----- idempotence -------------------------------------------------------------------------------


def read_stamp(base: Path) -> dict[str, Any] | None:
    try:
        stamp: dict[str, Any] = json.loads((base / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp


def existing(base: Path, params: TreeParams) -> TreeSummary | None:
    """The tree already at `base` with these parameters, if complete."""
    stamp = read_stamp(base)
    if stamp is None or stamp.get("params") != params.as_dict():
        return None
    return TreeSummary(**stamp["summary"])


def clear(base: Path) -> None:
    """Remove a tree this tool made (a stamp or an unfinished marker); never anything else."""
    if not base.exists():
        return
    ours = (base / STAMP).exists() or (base / ".generating").exists()
    if not ours and any(base.iterdir()):
        raise SystemExit(f"bench-tree: {base} exists and is not a tree made here; choose another --base")
    shutil.rmtree(base)


def generate(base: Path, params: TreeParams, force: bool = False) -> tuple[TreeSummary, bool]:
    """The tree at `base`: reused when its stamp has these parameters; (summary, made now)."""
    if not force and (found := existing(base, params)) is not None:
        return found, False
    clear(base)
    base.mkdir(parents=True)
    (base / ".generating").touch()
    root = base / ROOT
    fragment = base / FRAGMENT
    summary = Generator(root, params, fragment).run()
    fragment.write_text(fragment_text(root), encoding="utf-8")
    stamp = {"params": params.as_dict(), "summary": asdict(summary)}
    tmp = base / (STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(base / STAMP)
    (base / ".generating").unlink()
    return summary, True


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_tree.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=TreeParams.files, help="regular files (default 1,000,000)")
    p.add_argument("--huge", type=int, default=TreeParams.huge, help="huge files among them (default 3)")
    p.add_argument("--huge-mib", type=int, default=TreeParams.huge_mib, help="size of each (MiB, 256)")
    p.add_argument("--seed", type=int, default=TreeParams.seed)
    p.add_argument("--base", type=Path, default=None, help="where (default $TMPDIR or /var/tmp)")
    p.add_argument("--force", action="store_true", help="make it again even if the stamp matches")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.files < args.huge + 100:
        print("bench-tree: --files must be at least --huge + 100", file=sys.stderr)
        return 2
    params = TreeParams(args.files, args.huge, args.huge_mib, args.seed)
    base = args.base or default_base(args.files)
    summary, made = generate(base, params, args.force)
    what = f"made in {summary.generate_s:.0f}s" if made else "reused (same parameters)"
    print(
        f"bench-tree: {base / ROOT}: {summary.files:,} files ({summary.bytes / 1e9:.2f} GB), "
        f"{summary.folders:,} folders, {summary.symlinks:,} symlinks, {what}; "
        f"rules and root: {base / FRAGMENT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
