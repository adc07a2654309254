"""Write the config `make run` uses: one root, the embedded SQLite catalog under --state, and
the control socket at its default place (so a plain `importctl status` finds it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--demo", action="store_true", help="the demo tree: two roots with rule sets")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    state = Path(args.state).resolve()
    # json.dumps gives a valid TOML basic string for any path.
    print(f"settle_seconds = 5\nstate_dir = {json.dumps(str(state))}\n")
    if not args.demo:
        print(f"[[roots]]\nname = {json.dumps(root.name or 'root')}\npath = {json.dumps(str(root))}")
        return
    print(f'[[roots]]\nname = "studio"\npath = {json.dumps(str(root / "studio"))}\nrules = "characters"\n')
    print(
        f'[[roots]]\nname = "library"\npath = {json.dumps(str(root / "library"))}\nrules = "films-series"\n'
    )
    print('[expect.character]\nattributes = ["age"]\nroles = ["source_image"]\nscenes = ["intro", "dance"]\n')
    print('[expect.series]\nepisodes = "contiguous"')


if __name__ == "__main__":
    main()
