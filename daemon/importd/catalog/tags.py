"""Tags: names (with a colour, when the source has one) on files and entities, as old catalogs,
NFO files and `.tags.json` sidecars carry them. A tag is matched by its folded name (`fold`), so
`Outdoor` and `outdoor` are one tag; the first spelling seen is kept, and a colour fills in when
the tag had none (a differing colour never overwrites one silently: the first stays)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from importd.catalog.engine import dialect_insert
from importd.catalog.tables import chunks, entity_tags, file_tags, tags
from importd.entities import fold


@dataclass(frozen=True)
class Tag:
    id: int
    name: str
    color: str | None


def ensure_tags(conn: Connection, wanted: Mapping[str, str | None], now: float) -> dict[str, Tag]:
    """{name: Tag} for these tag names (name -> colour or None), creating the missing ones."""
    by_key = {fold(name): name for name in wanted if fold(name)}
    found: dict[str, Tag] = {}
    keys = sorted(by_key)
    for part in chunks(keys):
        for tid, key, name, color in conn.execute(
            select(tags.c.id, tags.c.key, tags.c.name, tags.c.color).where(tags.c.key.in_(part))
        ):
            found[key] = Tag(tid, name, color)
    for key in keys:
        name = by_key[key]
        color = wanted[name]
        tag = found.get(key)
        if tag is None:
            # Another server's daemon may add the same tag at once: then its row is the tag.
            new = (
                dialect_insert(conn, tags)
                .values(key=key, name=name, color=color, created=now)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(tags.c.id)
            )
            tid = conn.execute(new).scalar()
            if tid is None:
                row = conn.execute(
                    select(tags.c.id, tags.c.name, tags.c.color).where(tags.c.key == key)
                ).one()
                found[key] = Tag(int(row.id), row.name, row.color)
                continue
            found[key] = Tag(int(tid), name, color)
        elif tag.color is None and color:
            conn.execute(update(tags).where(tags.c.id == tag.id).values(color=color))
            found[key] = Tag(tag.id, tag.name, color)
    return {name: found[fold(name)] for name in wanted if fold(name)}


def tag_file(conn: Connection, file_id: int, tag_ids: Iterable[int], source: str, now: float) -> None:
    for tag_id in tag_ids:
        stmt = dialect_insert(conn, file_tags).values(file_id=file_id, tag_id=tag_id, source=source, at=now)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["file_id", "tag_id"]))


def tag_entity(conn: Connection, entity_id: int, tag_ids: Iterable[int], source: str, now: float) -> None:
    for tag_id in tag_ids:
        stmt = dialect_insert(conn, entity_tags).values(
            entity_id=entity_id, tag_id=tag_id, source=source, at=now
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["entity_id", "tag_id"]))


def tags_of_files(conn: Connection, file_ids: Sequence[int]) -> dict[int, list[Tag]]:
    out: dict[int, list[Tag]] = {}
    for part in chunks(list(file_ids)):
        rows = conn.execute(
            select(file_tags.c.file_id, tags.c.id, tags.c.name, tags.c.color)
            .join(tags, tags.c.id == file_tags.c.tag_id)
            .where(file_tags.c.file_id.in_(part))
            .order_by(tags.c.key)
        )
        for fid, tid, name, color in rows:
            out.setdefault(fid, []).append(Tag(tid, name, color))
    return out


@dataclass(frozen=True)
class TagCount:
    tag: Tag
    files: int
    entities: int


def tag_counts(conn: Connection) -> list[TagCount]:
    """Every tag with how many files and entities carry it, by name."""
    files_per: dict[int, int] = {
        tid: n
        for tid, n in conn.execute(select(file_tags.c.tag_id, func.count()).group_by(file_tags.c.tag_id))
    }
    entities_per: dict[int, int] = {
        tid: n
        for tid, n in conn.execute(select(entity_tags.c.tag_id, func.count()).group_by(entity_tags.c.tag_id))
    }
    return [
        TagCount(Tag(tid, name, color), int(files_per.get(tid, 0)), int(entities_per.get(tid, 0)))
        for tid, name, color in conn.execute(
            select(tags.c.id, tags.c.name, tags.c.color).order_by(tags.c.key)
        )
    ]
