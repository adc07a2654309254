"""file_counts: files and bytes per root and status, kept by triggers on files (status reads it
instead of counting every row)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:50:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ADD = """INSERT INTO file_counts (root_id, status, files, bytes)
    VALUES (NEW.root_id, NEW.status, 1, NEW.size)
    ON CONFLICT (root_id, status) DO UPDATE SET files = files + 1, bytes = bytes + excluded.bytes;"""
_SUB = """UPDATE file_counts SET files = files - 1, bytes = bytes - OLD.size
    WHERE root_id = OLD.root_id AND status = OLD.status;"""
SQLITE = (
    f"CREATE TRIGGER file_counts_insert AFTER INSERT ON files BEGIN {_ADD} END",
    f"CREATE TRIGGER file_counts_delete AFTER DELETE ON files BEGIN {_SUB} END",
    "CREATE TRIGGER file_counts_update AFTER UPDATE OF root_id, status, size ON files"
    " WHEN OLD.root_id IS NOT NEW.root_id OR OLD.status IS NOT NEW.status OR OLD.size IS NOT NEW.size"
    f" BEGIN {_SUB} {_ADD} END",
)
POSTGRESQL = (
    """CREATE FUNCTION file_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE file_counts SET files = files - 1, bytes = bytes - OLD.size
        WHERE root_id = OLD.root_id AND status = OLD.status;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO file_counts (root_id, status, files, bytes) VALUES (NEW.root_id, NEW.status, 1, NEW.size)
        ON CONFLICT (root_id, status)
        DO UPDATE SET files = file_counts.files + 1, bytes = file_counts.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER file_counts_insert_delete AFTER INSERT OR DELETE ON files"
    " FOR EACH ROW EXECUTE FUNCTION file_counts_track()",
    "CREATE TRIGGER file_counts_update AFTER UPDATE OF root_id, status, size ON files FOR EACH ROW"
    " WHEN (OLD.root_id IS DISTINCT FROM NEW.root_id OR OLD.status IS DISTINCT FROM NEW.status"
    " OR OLD.size IS DISTINCT FROM NEW.size) EXECUTE FUNCTION file_counts_track()",
)


def upgrade() -> None:
    op.create_table('file_counts',
    sa.Column('root_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('files', sa.BigInteger(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('root_id', 'status')
    )
    # Counted from the rows as they are, in the migration's transaction, before the triggers
    # take over.
    op.execute(
        "INSERT INTO file_counts (root_id, status, files, bytes)"
        " SELECT root_id, status, count(*), coalesce(sum(size), 0) FROM files GROUP BY root_id, status"
    )
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("file_counts_insert", "file_counts_delete", "file_counts_update"):
            op.execute(f"DROP TRIGGER {name}")
    else:
        op.execute("DROP TRIGGER file_counts_insert_delete ON files")
        op.execute("DROP TRIGGER file_counts_update ON files")
        op.execute("DROP FUNCTION file_counts_track()")
    op.drop_table('file_counts')
