"""Generate a small demo legacy tree for `make run`: characters, films, series, sidecars,
a symlink farm, an exact duplicate, a name that is not UTF-8 and a partial download."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path


def blob(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def main(target: str) -> None:
    root = Path(target)
    rng = random.Random(42)
    root.mkdir(parents=True, exist_ok=True)
    for name, age in (("Alice", 31), ("Bob", 45), ("Chloé", 27)):
        char = root / "studio" / name
        char.mkdir(parents=True, exist_ok=True)
        for scene in ("intro", "dance"):
            (char / f"{scene}.mp4").write_bytes(blob(rng, 200_000))
        (char / "source.jpg").write_bytes(blob(rng, 50_000))
        (char / "metadata.json").write_text(json.dumps({"name": name, "age": age}), encoding="utf-8")
    films = root / "library" / "Films" / "Le Grand Voyage (1998)"
    films.mkdir(parents=True, exist_ok=True)
    (films / "Le Grand Voyage (1998).mkv").write_bytes(blob(rng, 400_000))
    (films / "Le Grand Voyage (1998).mkv.part").write_bytes(blob(rng, 1000))  # ignored
    season = root / "library" / "Séries" / "Les Voisins" / "Saison 01"
    season.mkdir(parents=True, exist_ok=True)
    for ep in (1, 2, 4):
        (season / f"Les Voisins S01E{ep:02d}.mkv").write_bytes(blob(rng, 150_000))
    alice = root / "studio" / "Alice"
    (alice / "intro copy.mp4").write_bytes((alice / "intro.mp4").read_bytes())  # an exact duplicate
    links = root / "library" / "by-year" / "1998"
    links.mkdir(parents=True, exist_ok=True)
    link = links / "Le Grand Voyage.mkv"
    if not link.is_symlink():
        os.symlink("../../Films/Le Grand Voyage (1998)/Le Grand Voyage (1998).mkv", link)
    with open(os.fsencode(str(root)) + b"/library/caf\xe9 (latin-1 name).txt", "wb") as fh:
        fh.write(b"a name from an old Windows share\n")
    (root / "studio" / "Bob" / "dance.mp4").unlink()  # a gap for `importctl gaps`
    print(f"demo tree written to {root}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/legacy")
