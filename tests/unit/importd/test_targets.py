"""Target resolution: root names, absolute paths, paths relative to the client's directory, and
paths through a symlink into a root; one wording for each refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from importd.targets import Place, RootPlace, TargetError, locate, resolve_path, resolve_target


@pytest.fixture
def roots(tmp_path: Path) -> list[RootPlace]:
    for name in ("films", "music"):
        (tmp_path / name / "sub").mkdir(parents=True)
    return [
        RootPlace(1, "films", os.fsencode(tmp_path / "films")),
        RootPlace(2, "music", os.fsencode(tmp_path / "music")),
    ]


def test_no_target_is_every_root(roots: list[RootPlace]) -> None:
    assert resolve_target(None, roots) == [Place(1, b"", roots[0].path), Place(2, b"", roots[1].path)]
    assert resolve_target("", roots) == resolve_target(None, roots)
    assert resolve_target(None, []) == []


def test_a_root_by_name(roots: list[RootPlace]) -> None:
    assert resolve_target("music", roots) == [Place(2, b"", roots[1].path)]


def test_an_absolute_path_under_a_root(roots: list[RootPlace], tmp_path: Path) -> None:
    asked = f"{tmp_path}/films/sub/../sub/a.mkv/"
    found = resolve_target(asked, roots)
    assert found == [Place(1, b"sub/a.mkv", os.fsencode(f"{tmp_path}/films/sub/a.mkv"))]
    assert resolve_target(str(tmp_path / "films"), roots) == [Place(1, b"", roots[0].path)]


def test_a_sibling_with_a_common_prefix_is_not_under_the_root(roots: list[RootPlace], tmp_path: Path) -> None:
    (tmp_path / "films-old").mkdir()
    found = resolve_target(str(tmp_path / "films-old"), roots)
    assert found == TargetError("not_found", f"{tmp_path}/films-old is not under any configured root")


def test_an_unknown_name_lists_the_roots(roots: list[RootPlace]) -> None:
    assert resolve_target("nope", roots) == TargetError(
        "not_found", "no root named 'nope' (roots: films, music); give a root name or an absolute path"
    )
    refused = resolve_target("nope", [])
    assert isinstance(refused, TargetError) and "(roots: none)" in refused.message


def test_a_path_through_a_symlink_resolves_to_its_root(roots: list[RootPlace], tmp_path: Path) -> None:
    (tmp_path / "shortcut").symlink_to(tmp_path / "films" / "sub")
    asked = os.fsencode(tmp_path / "shortcut" / "a.mkv")
    assert locate(asked, roots) == Place(1, b"sub/a.mkv", asked)
    assert resolve_target(os.fsdecode(asked), roots) == [Place(1, b"sub/a.mkv", asked)]


def test_a_relative_path_is_joined_to_the_client_directory(roots: list[RootPlace], tmp_path: Path) -> None:
    cwd = str(tmp_path / "films")
    assert resolve_path("sub/a.mkv", roots, cwd) == Place(1, b"sub/a.mkv", os.fsencode(f"{cwd}/sub/a.mkv"))
    assert resolve_path(".", roots, cwd) == Place(1, b"", os.fsencode(cwd))
    assert resolve_path(f"{tmp_path}/music/x", roots, None) == Place(
        2, b"x", os.fsencode(f"{tmp_path}/music/x")
    )


def test_a_relative_path_without_a_directory_is_refused(roots: list[RootPlace]) -> None:
    assert resolve_path("sub/a.mkv", roots, None) == TargetError(
        "invalid", "'sub/a.mkv' is relative and no working directory was sent"
    )


def test_path_errors_show_undecodable_bytes_escaped(roots: list[RootPlace]) -> None:
    asked = os.fsdecode(b"/elsewhere/caf\xe9\nname")
    found = resolve_path(asked, roots, None)
    assert found == TargetError("not_found", "/elsewhere/caf\\xe9\\nname is not under any configured root")
    assert resolve_target(asked, roots) == found
