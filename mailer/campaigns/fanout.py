"""Fan-out: a campaign's recipients become outbox rows with INSERT ... SELECT, by contact id.

Set-based, never a Python loop per contact. Recipients are the topic's
subscribers at fan-out time, in the segment, minus every address with a mark
that refuses promotional mail; the unique (campaign, address) constraint makes
a second insert of the same address a no-op, so a fan-out interrupted and
started again never queues anyone twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from mailer.campaigns.models import Campaign
from mailer.consent.gate import Category
from mailer.consent.models import Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus
from mailer.suppressions.models import Reason, Suppression

# Address-wide marks that refuse promotional mail (consent.gate keeps the same list).
PROMOTIONAL_REFUSALS = [Reason.BOUNCED, Reason.COMPLAINED, Reason.LEFT, Reason.ERASED,
                        Reason.BLOCKED, Reason.QUARANTINED]


def _segment_conditions(segment: dict[str, Any]) -> list[ColumnElement[bool]]:
    conditions = []
    for name, value in (segment.get("attributes") or {}).items():
        field = Contact.attributes[name]
        if isinstance(value, bool):
            conditions.append(field.as_boolean() == value)
        elif isinstance(value, int | float):
            conditions.append(field.as_float() == float(value))
        else:
            conditions.append(field.as_string() == value)
    return conditions


def _random_public_id() -> ColumnElement[str]:
    if db.engine.dialect.name == "postgresql":
        return func.replace(cast(func.gen_random_uuid(), String), "-", "")
    return func.lower(func.hex(func.randomblob(16)))


def recipients_query(campaign: Campaign, low: int, high: int):
    """The rows to insert for contacts with low < id <= high."""
    now = utcnow()
    refused = exists().where(
        Suppression.address_hash == Contact.address_hash,
        or_(and_(Suppression.topic_id.is_(None),
                 Suppression.reason.in_([r.value for r in PROMOTIONAL_REFUSALS])),
            Suppression.topic_id == campaign.topic_id),
    )
    return (
        select(
            _random_public_id(),
            literal(Category.PROMOTIONAL.value),
            literal(campaign.topic_id, Integer),
            literal(campaign.template),
            literal_column("'{}'"),
            Contact.email,
            Contact.address_hash,
            literal(MessageStatus.QUEUED.value),
            literal(0, Integer),
            literal(now, Message.due_at.type),
            literal(campaign.id, Integer),
            literal(now, Message.created_at.type),
            literal(now, Message.updated_at.type),
        )
        .select_from(Contact)
        .join(Subscription, Subscription.contact_id == Contact.id)
        .where(
            Subscription.topic_id == campaign.topic_id,
            Subscription.state == SubscriptionState.SUBSCRIBED,
            Contact.id > low,
            Contact.id <= high,
            ~refused,
            *_segment_conditions(campaign.segment or {}),
        )
    )


INSERT_COLUMNS = ["public_id", "category", "topic_id", "template", "data", "to_address",
                  "address_hash", "status", "attempts", "due_at", "campaign_id", "created_at",
                  "updated_at"]


def fan_out_batch(campaign: Campaign, batch: int) -> bool:
    """Queue the recipients among the next `batch` contact ids; True once every id is done.

    Flushes; the caller commits, so the rows and the cursor move together.
    """
    high_id = db.session.scalar(select(func.max(Contact.id))) or 0
    low = campaign.fanout_cursor
    high = low + batch
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(Message.__table__)
        .from_select(INSERT_COLUMNS, recipients_query(campaign, low, high))
        .on_conflict_do_nothing()
    )
    db.session.execute(statement)
    campaign.fanout_cursor = high
    campaign.fanout_done = high >= high_id
    if campaign.fanout_done:
        # Counted once at the end: drivers differ in what rowcount says for INSERT ... SELECT.
        campaign.recipients = db.session.scalar(
            select(func.count()).select_from(Message).where(Message.campaign_id == campaign.id)
        )
    db.session.flush()
    return campaign.fanout_done
