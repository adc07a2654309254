"""Which catalogued sidecars describe a media file, by the name they share, per root.

A small `<video>.tags.json` settles and is mapped long before the big video it describes has
been copied, so when the video arrives the mapper must find the sidecar waiting for it. Asking
the catalog for each arriving file cost 25 µs a file on a cold import (three candidate paths
each); this index answers from memory. It is filled from the catalog once per root (the first
time the root's files are mapped: a restart loses nothing) and kept up to date from the mapped
batches. A stale entry (a sidecar gone since) only costs a read that fails quietly.
"""

from __future__ import annotations

from collections.abc import Iterable

from importd.entities.sidecars import sidecar_stem_of_path
from importd.media.versions import media_kind_of_path

__all__ = ["SidecarIndex"]


class SidecarIndex:
    def __init__(self) -> None:
        # root -> stem -> {file_id: relpath}; and file_id -> (root, stem), to forget an entry.
        self._by_stem: dict[int, dict[bytes, dict[int, bytes]]] = {}
        self._of_file: dict[int, tuple[int, bytes]] = {}

    def loaded(self, root_id: int) -> bool:
        return root_id in self._by_stem

    def load(self, root_id: int, sidecars: Iterable[tuple[int, bytes]]) -> None:
        self._by_stem.setdefault(root_id, {})
        for file_id, relpath in sidecars:
            self.add(root_id, file_id, relpath)

    def add(self, root_id: int, file_id: int, relpath: bytes) -> None:
        self.remove(file_id)
        stem = sidecar_stem_of_path(relpath)
        if stem is None:
            return
        self._by_stem.setdefault(root_id, {}).setdefault(stem, {})[file_id] = relpath
        self._of_file[file_id] = (root_id, stem)

    def remove(self, file_id: int) -> None:
        where = self._of_file.pop(file_id, None)
        if where is None:
            return
        root_id, stem = where
        entries = self._by_stem.get(root_id, {}).get(stem)
        if entries is not None:
            entries.pop(file_id, None)
            if not entries:
                del self._by_stem[root_id][stem]

    def describing(self, root_id: int, relpath: bytes) -> list[tuple[int, bytes]]:
        """(file_id, relpath) of the sidecars named for this media file (`Amélie.tags.json` or
        `Amélie.mkv.tags.json` for `Amélie.mkv`); none for a file that is no media."""
        stems = self._by_stem.get(root_id)
        if not stems or media_kind_of_path(relpath) is None:
            return []
        name_start = relpath.rfind(b"/") + 1
        dot = relpath.rfind(b".")
        keys = [relpath] + ([relpath[:dot]] if dot > name_start else [])
        return [entry for key in keys for entry in stems.get(key, {}).items()]

    def __len__(self) -> int:
        return len(self._of_file)
