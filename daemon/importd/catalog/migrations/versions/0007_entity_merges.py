"""entity merges: merge proposals among conflicts, merged entities keep their row

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merged_into', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_entities_merged_into', 'entities', ['merged_into'], ['id'])
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('kind', sa.String(length=16), nullable=False, server_default='attribute')
        )
        batch_op.add_column(sa.Column('other_entity_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_conflicts_other_entity_id', 'entities', ['other_entity_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('conflicts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_conflicts_other_entity_id', type_='foreignkey')
        batch_op.drop_column('other_entity_id')
        batch_op.drop_column('kind')
    with op.batch_alter_table('entities', schema=None) as batch_op:
        batch_op.drop_constraint('fk_entities_merged_into', type_='foreignkey')
        batch_op.drop_column('merged_into')
