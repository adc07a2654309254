"""attribute sources and tags: where each attribute value came from; tags on files and entities

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:10:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('attribute_sources',
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('attribute', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['entity_id'], ['entities.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('entity_id', 'attribute')
    )
    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('color', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index('uq_tags_key', ['key'], unique=True)
    op.create_table('file_tags',
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], ),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], ),
    sa.PrimaryKeyConstraint('file_id', 'tag_id')
    )
    with op.batch_alter_table('file_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_file_tags_tag_id'), ['tag_id'], unique=False)
    op.create_table('entity_tags',
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['entity_id'], ['entities.id'], ),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], ),
    sa.PrimaryKeyConstraint('entity_id', 'tag_id')
    )
    with op.batch_alter_table('entity_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_entity_tags_tag_id'), ['tag_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('entity_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_entity_tags_tag_id'))
    op.drop_table('entity_tags')
    with op.batch_alter_table('file_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_file_tags_tag_id'))
    op.drop_table('file_tags')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index('uq_tags_key')
    op.drop_table('tags')
    op.drop_table('attribute_sources')
