"""ix_files_gone_path: a path's gone rows (missing, forgotten) by root and path, so `find` by
path reads a path's history through an index instead of every row of its root

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:15:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GONE_PATH_WHERE = "status IN ('missing', 'forgotten')"


def upgrade() -> None:
    op.create_index(
        'ix_files_gone_path', 'files', ['root_id', 'relpath'],
        sqlite_where=sa.text(GONE_PATH_WHERE), postgresql_where=sa.text(GONE_PATH_WHERE),
    )


def downgrade() -> None:
    op.drop_index('ix_files_gone_path', table_name='files')
