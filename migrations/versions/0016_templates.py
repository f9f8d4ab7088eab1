"""Templates written in the console: one row per version, never changed.

Revision ID: 0016
Revises: 0009_outbox_byte_order
Create Date: 2026-12-07 23:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('console_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('body_format', sa.String(length=8), nullable=False),
    sa.Column('body_source', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('text_source', sa.Text(), nullable=True),
    sa.Column('body_text', sa.Text(), nullable=False),
    sa.Column('variables', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("category IN ('transactional', 'promotional', 'notice')", name=op.f('ck_console_templates_category')),
    sa.CheckConstraint("body_format IN ('markdown', 'html')", name=op.f('ck_console_templates_body_format')),
    sa.ForeignKeyConstraint(['created_by'], ['admin_users.id'], name=op.f('fk_console_templates_created_by_admin_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_templates')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_console_templates_name_version'))
    )


def downgrade():
    op.drop_table('console_templates')
