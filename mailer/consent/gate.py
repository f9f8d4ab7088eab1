"""The consent gate: the one decision, for every mail, of whether it may go to an address.

Every sending path calls `check()` (or `check_many()` for a batch) when a send
is accepted and again in the worker just before SMTP. The rules are the table
of ../shared/CONSENT.md; `decide()` is that table as code, and its tests read
like the table.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, bindparam, func, select

from mailer.consent.models import Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.suppressions.models import Reason, Suppression

CONFIRMATIONS_PER_DAY = 3
REFERRAL_INTERVAL = dt.timedelta(days=30)


class Category(enum.StrEnum):
    """The kinds of mail (../shared/CONSENT.md)."""

    TRANSACTIONAL = "transactional"
    PROMOTIONAL = "promotional"
    CONFIRMATION = "confirmation"
    REFERRAL = "referral"


class Stage(enum.Enum):
    ACCEPT = "accept"
    DELIVERY = "delivery"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str | None = None


ALLOW = Decision(True)


@dataclass(frozen=True, slots=True)
class Mark:
    reason: Reason
    topic_id: int | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Request:
    address_hash: str
    category: Category
    topic_id: int | None = None
    # A campaign's test mail to a test recipient (campaigns.testing): promotional mail that
    # needs no subscription, but every mark and an unsubscribe from the topic still refuse it.
    test_recipient: bool = False


# The address-wide marks that refuse promotional mail, in the order a reason is reported.
_PROMOTIONAL_REFUSALS = (
    (Reason.BOUNCED, "bounced"),
    (Reason.COMPLAINED, "complained"),
    (Reason.LEFT, "unsubscribed"),
    (Reason.ERASED, "erased"),
    (Reason.BLOCKED, "blocked"),
    (Reason.QUARANTINED, "quarantined"),
)
_REFERRAL_REFUSALS = (Reason.BOUNCED, Reason.COMPLAINED, Reason.LEFT, Reason.ERASED,
                      Reason.BLOCKED)


def decide(
    category: Category,
    marks: Iterable[Mark],
    *,
    topic_id: int | None = None,
    subscription: str | None = None,
    confirmations_today: int = 0,
    now: dt.datetime | None = None,
    stage: Stage = Stage.ACCEPT,
    test_recipient: bool = False,
) -> Decision:
    """The rule table: may a mail of `category` go to an address with these marks and state?"""
    address_marks = {m.reason: m for m in marks if m.topic_id is None}
    topic_marks = {m.reason for m in marks if m.topic_id is not None and m.topic_id == topic_id}
    if Reason.BOUNCED in address_marks:
        return Decision(False, "bounced")
    if category is Category.TRANSACTIONAL:
        return ALLOW
    if category is Category.CONFIRMATION:
        if confirmations_today >= CONFIRMATIONS_PER_DAY:
            return Decision(False, "confirmation_limit")
        return ALLOW
    if category is Category.REFERRAL:
        for reason in _REFERRAL_REFUSALS:
            if reason in address_marks:
                return Decision(False, reason.value)
        # The 30 days limit how often a referral is accepted; at delivery the mark is the one
        # accepting this very mail set, so it must not stop the mail.
        quarantine = address_marks.get(Reason.QUARANTINED)
        if (stage is Stage.ACCEPT and quarantine is not None
                and (now or utcnow()) - quarantine.created_at < REFERRAL_INTERVAL):
            return Decision(False, "quarantined")
        return ALLOW
    if category is Category.PROMOTIONAL:
        if topic_id is None:
            return Decision(False, "no_topic")
        for reason, label in _PROMOTIONAL_REFUSALS:
            if reason in address_marks:
                return Decision(False, label)
        if Reason.UNSUBSCRIBED in topic_marks or subscription == SubscriptionState.UNSUBSCRIBED:
            return Decision(False, "unsubscribed")
        if test_recipient:
            return ALLOW
        if subscription != SubscriptionState.SUBSCRIBED:
            return Decision(False, "not_subscribed")
        return ALLOW
    raise ValueError(f"unknown category {category!r}")


# Statements of the gate, built once: building and caching-keying a statement on every call
# cost more than SQLite running it. Core columns, not ORM entities: rows, not objects, are
# what the rules read, and the ORM's result processing cost as much again.
_suppressions = Suppression.__table__.c
_MARK_COLUMNS = (_suppressions.address_hash, _suppressions.reason, _suppressions.topic_id,
                 _suppressions.created_at)
# One address (every send through the API) needs no IN list to be expanded into the SQL.
_MARKS_OF_ONE = select(*_MARK_COLUMNS).where(_suppressions.address_hash == bindparam("hash"))
_MARKS_OF_MANY = select(*_MARK_COLUMNS).where(
    _suppressions.address_hash.in_(bindparam("hashes", expanding=True)))
_contacts = Contact.__table__.c
_CONTACTS_BY_HASH = select(_contacts.id, _contacts.address_hash).where(
    _contacts.address_hash.in_(bindparam("hashes", expanding=True)))
_subscriptions = Subscription.__table__.c
_SUBSCRIPTIONS_OF_CONTACTS = select(
    _subscriptions.contact_id, _subscriptions.topic_id, _subscriptions.state
).where(_subscriptions.contact_id.in_(bindparam("contacts", expanding=True)))


def _marks_by_hash(hashes: set[str]) -> dict[str, list[Mark]]:
    found: dict[str, list[Mark]] = defaultdict(list)
    if len(hashes) == 1:
        rows = db.session.execute(_MARKS_OF_ONE, {"hash": next(iter(hashes))})
    else:
        rows = db.session.execute(_MARKS_OF_MANY, {"hashes": list(hashes)})
    for address_hash, reason, topic_id, created_at in rows:
        found[address_hash].append(Mark(Reason(reason), topic_id, created_at))
    return found


def _subscription_states(pairs: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    if not pairs:
        return {}
    hashes = {address_hash for address_hash, _ in pairs}
    topics = {topic_id for _, topic_id in pairs}
    # Looked up by the contacts' keys alone, then filtered here. Asked for "these contacts
    # in these topics", SQLite (and PostgreSQL before it has statistics) walks all of a
    # topic's subscriptions through (topic_id, state) for every batch: a cost that grows with
    # the topic. By contact, only the (contact_id, topic_id) key fits: a cost of the batch.
    contacts = dict(db.session.execute(_CONTACTS_BY_HASH, {"hashes": list(hashes)}).all())
    if not contacts:
        return {}
    rows = db.session.execute(_SUBSCRIPTIONS_OF_CONTACTS, {"contacts": list(contacts)})
    return {(contacts[contact_id], topic_id): state
            for contact_id, topic_id, state in rows if topic_id in topics}


@functools.cache
def _confirmations_statement() -> Select[tuple[str, int]]:
    """Built once, at first use: the outbox's model imports this module."""
    from mailer.messages.models import Message  # the outbox records what was sent

    messages = Message.__table__.c
    return (
        select(messages.address_hash, func.count())
        .where(
            messages.address_hash.in_(bindparam("hashes", expanding=True)),
            messages.category == Category.CONFIRMATION.value,
            messages.created_at >= bindparam("since", type_=messages.created_at.type),
            messages.status.not_in(["suppressed", "cancelled"]),
        )
        .group_by(messages.address_hash)
    )


def _confirmations_today(hashes: set[str]) -> dict[str, int]:
    if not hashes:
        return {}
    since = utcnow() - dt.timedelta(days=1)
    rows = db.session.execute(_confirmations_statement(), {"hashes": list(hashes), "since": since})
    return {address_hash: count for address_hash, count in rows}


def check_many(requests: Sequence[Request], *, stage: Stage) -> list[Decision]:
    """Decide each request, reading marks and subscriptions for the whole batch at once."""
    if not requests:
        return []
    hashes = {r.address_hash for r in requests}
    marks = _marks_by_hash(hashes)
    states = _subscription_states(
        {(r.address_hash, r.topic_id) for r in requests
         if r.category is Category.PROMOTIONAL and r.topic_id is not None}
    )
    confirmations: dict[str, int] = {}
    if stage is Stage.ACCEPT:
        confirmations = _confirmations_today(
            {r.address_hash for r in requests if r.category is Category.CONFIRMATION}
        )
    now = utcnow()
    return [
        decide(
            r.category,
            marks.get(r.address_hash, ()),
            topic_id=r.topic_id,
            subscription=states.get((r.address_hash, r.topic_id)) if r.topic_id else None,
            confirmations_today=confirmations.get(r.address_hash, 0),
            now=now,
            stage=stage,
            test_recipient=r.test_recipient,
        )
        for r in requests
    ]


def check(
    address_hash: str, category: Category, topic_id: int | None = None, *,
    stage: Stage = Stage.ACCEPT, test_recipient: bool = False,
) -> Decision:
    """Decide one mail; see check_many."""
    return check_many([Request(address_hash, category, topic_id, test_recipient)],
                      stage=stage)[0]
