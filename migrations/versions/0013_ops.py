"""Console roles and server-side sessions; API keys' last use.

admin_users gets `role` (`admin` | `marketer`; every existing user becomes an admin, as
before), `session_version` (part of each session's id: raising it ends every session of the
user) and `disabled_at`. api_keys gets `last_used_at`.

Revision ID: 0013
Revises: 0009_outbox_byte_order
Create Date: 2026-12-07 23:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0009_outbox_byte_order'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('admin_users') as batch:
        batch.add_column(sa.Column('role', sa.String(length=20), server_default='admin', nullable=False))
        batch.add_column(sa.Column('session_version', sa.Integer(), server_default='1', nullable=False))
        batch.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('last_used_at')
    with op.batch_alter_table('admin_users') as batch:
        batch.drop_column('disabled_at')
        batch.drop_column('session_version')
        batch.drop_column('role')
