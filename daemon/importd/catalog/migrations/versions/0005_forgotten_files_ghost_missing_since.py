"""forgotten files: the live-path index leaves them out; ghost findings keep missing_since

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 01:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `status` is a free string (no CHECK constraint), so `forgotten` needs no change of column; the
# partial unique index of live paths does: a forgotten row is not live, and several may share a
# path with a live row.
OLD_WHERE = "status != 'missing'"
NEW_WHERE = "status NOT IN ('missing', 'forgotten')"


def _live_path_index(where: str) -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('uq_files_live_path')
        batch_op.create_index(
            'uq_files_live_path', ['root_id', 'relpath'], unique=True,
            sqlite_where=sa.text(where), postgresql_where=sa.text(where),
        )


def upgrade() -> None:
    _live_path_index(NEW_WHERE)
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('missing_since', sa.Float(), nullable=True))


def downgrade() -> None:
    # Forgotten rows become missing again: the old index counts any other status as live.
    op.execute("UPDATE files SET status = 'missing' WHERE status = 'forgotten'")
    _live_path_index(OLD_WHERE)
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('missing_since')
