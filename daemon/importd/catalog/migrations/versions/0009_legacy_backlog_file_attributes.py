"""legacy backlog and file attributes: a legacy catalog's rows waiting to be hashed, whether the
backlog is paused, and values an old catalog held about one file

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:20:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('legacy_backlog',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('root_id', sa.Integer(), nullable=False),
    sa.Column('relpath', sa.LargeBinary(), nullable=False),
    sa.Column('legacy_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('record', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('added', sa.Float(), nullable=False),
    sa.Column('settled', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['root_id'], ['roots.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('legacy_backlog', schema=None) as batch_op:
        batch_op.create_index('ix_legacy_backlog_state', ['state', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_legacy_backlog_run_id'), ['run_id'], unique=False)
    op.create_table('backlog_control',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('updated', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('file_attributes',
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('file_id', 'name')
    )


def downgrade() -> None:
    op.drop_table('file_attributes')
    op.drop_table('backlog_control')
    with op.batch_alter_table('legacy_backlog', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_legacy_backlog_run_id'))
        batch_op.drop_index('ix_legacy_backlog_state')
    op.drop_table('legacy_backlog')
