"""The shared send-rate limit (MAILER_MAX_RATE): one row holding the next free send slot.

Revision ID: 0007_send_rate
Revises: 0006_outbox_indexes
Create Date: 2026-11-25 18:55:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0007_send_rate'
down_revision = '0006_outbox_indexes'
branch_labels = None
depends_on = None


def upgrade():
    send_rate = op.create_table('send_rate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('next_slot', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_send_rate'))
    )
    # The one row every worker updates (mailer.delivery.throttle creates it again if missing).
    op.bulk_insert(send_rate, [{'id': 1, 'next_slot': 0.0}])


def downgrade():
    op.drop_table('send_rate')
