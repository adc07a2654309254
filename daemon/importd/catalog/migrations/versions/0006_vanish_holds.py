"""vanish holds: the brake on a mass disappearance

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('vanish_holds',
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('root_id', sa.Integer(), nullable=False),
    sa.Column('since', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['root_id'], ['roots.id'], ),
    sa.PrimaryKeyConstraint('file_id')
    )
    with op.batch_alter_table('vanish_holds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vanish_holds_root_id'), ['root_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vanish_holds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vanish_holds_root_id'))

    op.drop_table('vanish_holds')
