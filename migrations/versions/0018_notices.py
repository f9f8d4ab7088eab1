"""Notices (mailer.notices): the notices sent, the deliveries that keep a policy version to one
mail per address, the outbox's `notice` category and `notice_id`, consent events about a
notice; and a topic's welcome template.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 00:15:00.000000
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

OLD_CATEGORIES = "category IN ('transactional', 'promotional', 'confirmation', 'referral')"
NEW_CATEGORIES = ("category IN ('transactional', 'promotional', 'confirmation', 'referral', "
                  "'notice')")
OLD_SUBJECTS = "subject IN ('topic', 'partner_sharing', 'address')"
NEW_SUBJECTS = "subject IN ('topic', 'partner_sharing', 'address', 'notice')"
NOTICE_ROWS = "notice_id IS NOT NULL"


def upgrade():
    op.create_table(
        'notices',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('public_id', sa.String(length=32), nullable=False),
        sa.Column('template', sa.String(length=100), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('policy_version', sa.String(length=100), nullable=False),
        sa.Column('recipients', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notices')),
        sa.UniqueConstraint('public_id', name=op.f('uq_notices_public_id')),
    )
    op.create_table(
        'notice_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('policy_version', sa.String(length=100), nullable=False),
        sa.Column('address_hash', sa.String(length=64), nullable=False),
        sa.Column('notice_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['notice_id'], ['notices.id'],
                                name=op.f('fk_notice_deliveries_notice_id_notices'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notice_deliveries')),
        sa.UniqueConstraint('policy_version', 'address_hash',
                            name=op.f('uq_notice_deliveries_policy_version_address_hash')),
    )
    with op.batch_alter_table('notice_deliveries') as batch_op:
        batch_op.create_index(batch_op.f('ix_notice_deliveries_notice_id'), ['notice_id'])
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('notice_id', sa.Integer(), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_messages_category'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_messages_category'), sa.text(NEW_CATEGORIES))
    op.create_index('ix_messages_notice_id', 'messages', ['notice_id'],
                    postgresql_where=sa.text(NOTICE_ROWS), sqlite_where=sa.text(NOTICE_ROWS))
    with op.batch_alter_table('consent_events') as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_consent_events_subject'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_consent_events_subject'), sa.text(NEW_SUBJECTS))
    with op.batch_alter_table('topics') as batch_op:
        batch_op.add_column(sa.Column('welcome_template', sa.String(length=100), nullable=True))


def downgrade():
    with op.batch_alter_table('topics') as batch_op:
        batch_op.drop_column('welcome_template')
    op.execute("DELETE FROM consent_events WHERE subject = 'notice'")
    with op.batch_alter_table('consent_events') as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_consent_events_subject'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_consent_events_subject'), sa.text(OLD_SUBJECTS))
    op.drop_index('ix_messages_notice_id', table_name='messages')
    op.execute("DELETE FROM messages WHERE category = 'notice'")
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_messages_category'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_messages_category'), sa.text(OLD_CATEGORIES))
        batch_op.drop_column('notice_id')
    op.drop_table('notice_deliveries')
    op.drop_table('notices')
