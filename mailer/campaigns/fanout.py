"""Fan-out: a campaign's recipients become outbox rows with INSERT ... SELECT, by contact id.

Set-based, never a Python loop per contact. Recipients are the topic's
subscribers at fan-out time, in the segment, to whom the consent gate's own rule
allows promotional mail (`gate.promotional_allowed`, the same rule as `decide()`).
The unique (address, campaign) constraint makes "at most once per address" a
database fact: whatever goes wrong, a second row for the same address and
campaign cannot be stored.

Cost (bench/fanout.py, bench/README.md): a batch is one statement; per row
PostgreSQL pays the heap insert and one B-tree insert per index of the outbox
(migration 0006 left no foreign-key check of topic or campaign, which costs a
query per row). So the statement is kept to what each row needs: no ON
CONFLICT on the common path (its speculative insertion costs about as much as
an index), rows in the order of the address index and public ids that rise in
that order (each index then filled from one end to the other, not at random
places), keys compared as bytes (migration 0009), randomness made in Python
once a batch, the subscriptions read by the same id range as the contacts.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    LargeBinary,
    Select,
    String,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from mailer.campaigns.models import Campaign
from mailer.consent import gate
from mailer.consent.models import Subscription
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Category, Message, MessageStatus

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


# A public id is 32 hex digits: 8 of the fan-out's second, 5 numbering the rows of a batch
# (16**5 > FANOUT_BATCH; a larger batch wraps round, which costs only speed), 19 random.
ROW_NUMBER_DIGITS = 5
RANDOM_DIGITS = 32 - 8 - ROW_NUMBER_DIGITS
RANDOM_BYTES = (RANDOM_DIGITS + 1) // 2


def _address_order() -> ColumnElement[str]:
    """Contacts in address-hash order, compared as bytes.

    Hex digits sort alike in every collation, so this is the order of the outbox's
    address index whatever the database's collation; but a sort by a collation
    other than "C" compares with strcoll() and cannot use abbreviated keys.
    """
    if db.engine.dialect.name == "postgresql":
        return Contact.address_hash.collate("C")
    return Contact.address_hash  # SQLite compares bytes by default


def public_ids(now: dt.datetime, rows: int) -> ColumnElement[str]:
    """Public ids for up to `rows` rows of an INSERT ... SELECT ordered by `_address_order()`
    over contacts (a fan-out, a notice): the second, the row's place, 19 random digits.

    The public id is in the Message-ID and bounce addresses, so it must not be
    guessable: the 19 random digits hold 76 bits from the operating system's
    CSPRNG (the secrets module), far beyond guessing. They come from Python as one
    parameter of the statement, RANDOM_BYTES a row, each row taking the bytes at
    its place: a gen_random_uuid() a row cost the database a sixth of a fan-out.
    The place is for the unique index: ids that rise in the order the rows are
    inserted (the address order, see recipients_query) are appended at its end,
    where fully random ones land each on another page of it (a third of the
    fan-out, bench/README.md). The time and place tell no more than the mail's
    Date header and the batch's size.
    """
    prefix = literal(f"{int(now.timestamp()):08x}", String)
    place = func.row_number().over(order_by=_address_order())
    random_bytes = bindparam("random_bytes", secrets.token_bytes(rows * RANDOM_BYTES),
                             type_=LargeBinary)
    own = func.substr(random_bytes, cast((place - 1) * RANDOM_BYTES + 1, Integer), RANDOM_BYTES)
    place = place % 16**ROW_NUMBER_DIGITS
    if db.engine.dialect.name == "postgresql":
        place_hex = func.lpad(func.to_hex(place), ROW_NUMBER_DIGITS, "0")
        random_hex = func.encode(own, "hex")
    else:
        place_hex = func.printf(f"%0{ROW_NUMBER_DIGITS}x", place)
        random_hex = func.lower(func.hex(own))
    return prefix + place_hex + func.substr(random_hex, 1, RANDOM_DIGITS)


def recipient_conditions(topic_id: int, segment: dict[str, Any]) -> list[ColumnElement[bool]]:
    """Who a campaign of the topic and segment reaches, over contacts joined to their
    subscriptions: subscribed to the topic, in the segment, and allowed promotional mail of
    the topic by the consent gate's own rule. The fan-out and the console's recipient count
    both select with these."""
    return [
        Subscription.topic_id == topic_id,
        gate.promotional_allowed(Contact.address_hash, topic_id,
                                 subscription_state=Subscription.state),
        *_segment_conditions(segment),
    ]


def count_recipients(topic_id: int, segment: dict[str, Any]) -> int:
    """How many addresses a campaign of the topic and segment would reach if it fanned out
    now (the fan-out's own selection; consent is checked again at delivery)."""
    return db.session.scalar(
        select(func.count()).select_from(Contact)
        .join(Subscription, Subscription.contact_id == Contact.id)
        .where(*recipient_conditions(topic_id, segment))
    ) or 0


def recipients_query(campaign: Campaign, low: int, high: int,
                     now: dt.datetime | None = None) -> Select[Any]:
    """The outbox rows (INSERT_COLUMNS) for the recipients among contacts low < id <= high."""
    now = now or utcnow()
    return (
        select(
            public_ids(now, high - low),
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
            *recipient_conditions(campaign.topic_id, campaign.segment or {}),
        )
        # In the order of the (address_hash, campaign_id) index, the one index keyed on a
        # random value: the batch then walks it from end to end, each page read once,
        # instead of a jump to another page for every row (a quarter less work in all).
        .order_by(_address_order())
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
