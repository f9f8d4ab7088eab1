"""Fan-out: a campaign's recipients become outbox rows with INSERT ... SELECT, by contact id.

Set-based, never a Python loop per contact. Recipients are the topic's
subscribers at fan-out time, in the segment, minus every address with a mark
that refuses promotional mail (quarantine included) or that left the topic.
The unique (address, campaign) constraint makes "at most once per address" a
database fact: whatever goes wrong, a second row for the same address and
campaign cannot be stored.

Cost (bench/fanout.py, bench/README.md): a batch is one statement; per row
PostgreSQL pays the heap insert and one B-tree insert per index of the outbox
(migration 0006 left one index keyed on a random value, and no foreign-key
check, which costs a query per row). So the statement is kept to what each row
needs: no ON CONFLICT on the common path (its speculative insertion costs about
as much as an index), rows in the order of the address index, public ids that
land next to each other in theirs, the subscriptions read by the same id range
as the contacts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Select,
    String,
    and_,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

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

INSERT_COLUMNS = ["public_id", "category", "topic_id", "template", "data", "to_address",
                  "address_hash", "status", "attempts", "due_at", "campaign_id", "created_at",
                  "updated_at", "is_test"]


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


def _random_public_id(now: dt.datetime) -> ColumnElement[str]:
    """32 hex digits: the fan-out's second (8 digits), then 24 random ones.

    The public id is in the Message-ID and bounce addresses, so it must not be
    guessable: the 24 digits hold 90 bits from the database's strong random
    source (the API's uuid4 ids hold 122; either is far beyond guessing). The
    time prefix is for the unique index: fully random keys land all over it,
    each insert on another page, and in an outbox of many campaigns most of
    those pages are not in memory; a batch's keys share one prefix, so the batch
    fills a few neighbouring pages. It tells no more than the mail's Date header.
    """
    prefix = literal(f"{int(now.timestamp()):08x}", String)
    if db.engine.dialect.name == "postgresql":
        # One gen_random_uuid() a row (OpenSSL's CSPRNG; it is the costly part): its first
        # 24 hex digits, of which digit 13 (the version) and two bits of 17 are fixed.
        random_hex = func.encode(func.uuid_send(func.gen_random_uuid()), "hex")
        return prefix + func.substr(random_hex, 1, 24)
    return prefix + func.lower(func.hex(func.randomblob(12)))


def recipients_query(campaign: Campaign, low: int, high: int,
                     now: dt.datetime | None = None) -> Select[Any]:
    """The outbox rows (INSERT_COLUMNS) for the recipients among contacts low < id <= high."""
    now = now or utcnow()
    refused = exists().where(
        Suppression.address_hash == Contact.address_hash,
        or_(and_(Suppression.topic_id.is_(None),
                 Suppression.reason.in_([r.value for r in PROMOTIONAL_REFUSALS])),
            Suppression.topic_id == campaign.topic_id),
    )
    return (
        select(
            _random_public_id(now),
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
            literal(False),
        )
        .select_from(Contact)
        .join(Subscription, Subscription.contact_id == Contact.id)
        .where(
            Contact.id > low,
            Contact.id <= high,
            # The same range on the subscriptions' (contact_id, topic_id) key: without it
            # PostgreSQL reads all of the topic's subscriptions for every batch.
            Subscription.contact_id > low,
            Subscription.contact_id <= high,
            Subscription.topic_id == campaign.topic_id,
            Subscription.state == SubscriptionState.SUBSCRIBED,
            ~refused,
            *_segment_conditions(campaign.segment or {}),
        )
        # In the order of the (address_hash, campaign_id) index, the one index keyed on a
        # random value: the batch then walks it from end to end, each page read once,
        # instead of a jump to another page for every row (a quarter less work in all).
        .order_by(Contact.address_hash)
    )


def _insert(rows: Select[Any], *, skip_existing: bool) -> Insert:
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    # SQLAlchemy keeps an INSERT's rowcount only when asked; both drivers then give the rows
    # inserted (duplicates skipped by ON CONFLICT not counted), which the tests check.
    statement = (dialect.insert(Message.__table__).from_select(INSERT_COLUMNS, rows)
                 .execution_options(preserve_rowcount=True))
    if skip_existing:
        return statement.on_conflict_do_nothing(index_elements=["address_hash", "campaign_id"])
    return statement


def fan_out_batch(campaign: Campaign, batch: int) -> bool:
    """Queue the recipients among the next `batch` contact ids; True once every id is done.

    Flushes; the caller commits, so the rows, the cursor and the recipient count
    move together: a worker that dies mid-batch leaves neither rows nor cursor of it.
    """
    db.session.flush()  # a cursor the caller changed counts
    # Moving the cursor first takes the campaign's row lock (and, on SQLite, opens the write
    # transaction the savepoint below must nest in, or releasing it would commit). A second
    # worker that took the campaign over while this one was inside a batch waits here for its
    # commit, then reads the moved cursor: it goes on with the next ids, not the same ones.
    campaigns = Campaign.__table__.c
    high, recipients = db.session.execute(
        update(Campaign.__table__).where(campaigns.id == campaign.id)
        .values(fanout_cursor=campaigns.fanout_cursor + batch)
        .returning(campaigns.fanout_cursor, campaigns.recipients)
    ).one()
    low = high - batch
    high_id = db.session.scalar(select(func.max(Contact.id))) or 0
    if db.engine.dialect.name == "postgresql":
        # Room to sort a batch in memory (rows of about 350 bytes, twice that while sorted),
        # for this transaction only: the default 4 MB spills the sort to disk.
        db.session.execute(text(f"SET LOCAL work_mem = '{max(4, batch * 640 // 2**20)}MB'"))
    rows = recipients_query(campaign, low, high)
    try:
        # Nothing of these ids can be in the outbox yet (rows and cursor commit together), so
        # no conflict handling: ON CONFLICT's speculative insertion would cost every row.
        with db.session.begin_nested():
            inserted = db.session.execute(_insert(rows, skip_existing=False)).rowcount
    except IntegrityError:
        # Some are: the cursor was set back (an operator, a test) or rows were queued another
        # way. The unique constraint refused the duplicates; queue the others.
        inserted = db.session.execute(_insert(rows, skip_existing=True)).rowcount
    campaign.fanout_cursor = high
    campaign.recipients = recipients + inserted
    campaign.fanout_done = high >= high_id
    db.session.flush()
    return campaign.fanout_done
