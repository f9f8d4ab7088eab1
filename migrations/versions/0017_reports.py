"""Audience reports: the day's stored answer per grouping and k (mailer.reports).

Revision ID: 0017
Revises: 0009_outbox_byte_order
Create Date: 2026-12-07 23:10:00.000000
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0017'
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'audience_reports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('dimensions', sa.String(length=200), nullable=False),
        sa.Column('min_group', sa.Integer(), nullable=False),
        sa.Column('answer', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audience_reports')),
        sa.UniqueConstraint('day', 'dimensions', 'min_group',
                            name=op.f('uq_audience_reports_day_dimensions_min_group')),
    )


def downgrade():
    op.drop_table('audience_reports')
