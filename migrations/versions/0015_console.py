"""Topics the console edits and retires: a welcome text for the confirmation page, and the
time a topic was retired (no new subscriptions after it; its history stays).

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-07 23:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('topics') as batch_op:
        batch_op.add_column(sa.Column('welcome_text', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('topics') as batch_op:
        batch_op.drop_column('retired_at')
        batch_op.drop_column('welcome_text')
