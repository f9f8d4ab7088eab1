"""Facts about the installation (name/value rows): the address-hash key's fingerprint.

Revision ID: 0008_installation
Revises: 0007_send_rate
Create Date: 2026-11-25 19:10:00.000000

The table starts empty: the first process that uses the database records the fingerprint
(mailer.installation), so the migration needs no key.
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0008_installation'
down_revision = '0007_send_rate'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('installation',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_installation'))
    )


def downgrade():
    op.drop_table('installation')
