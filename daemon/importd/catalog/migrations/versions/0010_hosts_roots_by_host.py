"""several servers, one catalog: a root is its host and its name, runs say which host ran them,
and each host's daemon leaves a heartbeat

Existing roots and runs get host '' here; the first daemon to start on the catalog adopts them
(before this revision one daemon used a catalog, so they are its own).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 06:20:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started', sa.Float(), nullable=False),
    sa.Column('heartbeat', sa.Float(), nullable=False),
    sa.Column('interval', sa.Float(), nullable=False),
    sa.Column('stopped', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('roots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=255), nullable=False, server_default=''))
        batch_op.drop_index('ix_roots_name')
        batch_op.create_index('ix_roots_name', ['name'], unique=False)
        batch_op.create_index('uq_roots_host_name', ['host', 'name'], unique=True)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('host', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('host')
    with op.batch_alter_table('roots', schema=None) as batch_op:
        batch_op.drop_index('uq_roots_host_name')
        batch_op.drop_index('ix_roots_name')
        batch_op.create_index('ix_roots_name', ['name'], unique=True)
        batch_op.drop_column('host')
    op.drop_table('hosts')
