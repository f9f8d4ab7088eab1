"""Outbox indexes for a fast fan-out: one address-keyed index instead of two, fewer checks.

The outbox had an index on address_hash and a unique (campaign_id, address_hash):
two B-trees keyed on a random 64-digit hash, each updated at a random place for
every row a campaign fans out. One unique (address_hash, campaign_id) does both
jobs: it keeps each campaign to one row per address, and its leading column
serves every lookup by address (erasure's scrub, bounce matching, the consent
gate's confirmation count). Lookups by campaign (stats, cancel, finishing, the
ON DELETE CASCADE from campaigns) get a plain index on campaign_id, whose keys
a fan-out appends in order, at almost no cost.

The foreign keys of messages.topic_id and messages.campaign_id go: PostgreSQL
checks a foreign key with one query per inserted row, and these two checks were
a third of a campaign's fan-out time (bench/README.md). Both values are right
by construction (accept reads the topic in the transaction that queues the
mail; fan-out holds the campaign's row locked while it inserts, and
campaigns.topic_id keeps its foreign key), and the app deletes no topic and no
campaign, so their ON DELETE actions never ran. api_key_id keeps its key.

On PostgreSQL the index builds lock the messages table against writes while
they run (a few seconds per million rows).

Revision ID: 0006_outbox_indexes
Revises: 0005_admin_users
Create Date: 2026-11-25 19:05:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0006_outbox_indexes'
down_revision = '0005_admin_users'
branch_labels = None
depends_on = None


def upgrade():
    # The new indexes first: at no moment is the table without its uniqueness rule.
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_messages_address_hash_campaign_id'),
                                          ['address_hash', 'campaign_id'])
        batch_op.create_index(batch_op.f('ix_messages_campaign_id'), ['campaign_id'],
                              unique=False)
        batch_op.drop_constraint(batch_op.f('uq_messages_campaign_id_address_hash'),
                                 type_='unique')
        batch_op.drop_index(batch_op.f('ix_messages_address_hash'))
        batch_op.drop_constraint(batch_op.f('fk_messages_topic_id_topics'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_messages_campaign_id_campaigns'),
                                 type_='foreignkey')


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_messages_topic_id_topics'), 'topics',
                                    ['topic_id'], ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key(batch_op.f('fk_messages_campaign_id_campaigns'),
                                    'campaigns', ['campaign_id'], ['id'], ondelete='CASCADE')
        batch_op.create_index(batch_op.f('ix_messages_address_hash'), ['address_hash'],
                              unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_messages_campaign_id_address_hash'),
                                          ['campaign_id', 'address_hash'])
        batch_op.drop_index(batch_op.f('ix_messages_campaign_id'))
        batch_op.drop_constraint(batch_op.f('uq_messages_address_hash_campaign_id'),
                                 type_='unique')
