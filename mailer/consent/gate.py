"""The consent gate: the one decision, for every mail, of whether it may go to an address.

Every sending path calls `check()` (or `check_many()` for a batch) when a send
is accepted and again in the worker just before SMTP. The rules are the table
of ../shared/CONSENT.md; `decide()` is that table as code, and its tests read
like the table.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

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
        if subscription != SubscriptionState.SUBSCRIBED:
            return Decision(False, "not_subscribed")
        return ALLOW
    raise ValueError(f"unknown category {category!r}")


def _marks_by_hash(hashes: set[str]) -> dict[str, list[Mark]]:
    found: dict[str, list[Mark]] = defaultdict(list)
    rows = db.session.execute(
        select(Suppression.address_hash, Suppression.reason, Suppression.topic_id,
               Suppression.created_at).where(Suppression.address_hash.in_(hashes))
    )
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
    contacts = dict(db.session.execute(
        select(Contact.__table__.c.id, Contact.__table__.c.address_hash)
        .where(Contact.__table__.c.address_hash.in_(hashes))
    ).all())
    if not contacts:
        return {}
    subscriptions = Subscription.__table__.c
    rows = db.session.execute(
        select(subscriptions.contact_id, subscriptions.topic_id, subscriptions.state)
        .where(subscriptions.contact_id.in_(contacts))
    )
    return {(contacts[contact_id], topic_id): state
            for contact_id, topic_id, state in rows if topic_id in topics}


def _confirmations_today(hashes: set[str]) -> dict[str, int]:
    if not hashes:
        return {}
    from mailer.messages.models import Message  # the outbox records what was sent

    since = utcnow() - dt.timedelta(days=1)
    rows = db.session.execute(
        select(Message.address_hash, func.count())
        .where(
            Message.address_hash.in_(hashes),
            Message.category == Category.CONFIRMATION,
            Message.created_at >= since,
            Message.status.not_in(["suppressed", "cancelled"]),
        )
        .group_by(Message.address_hash)
    )
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
        )
        for r in requests
    ]


def check(
    address_hash: str, category: Category, topic_id: int | None = None, *,
    stage: Stage = Stage.ACCEPT,
) -> Decision:
    """Decide one mail; see check_many."""
    return check_many([Request(address_hash, category, topic_id)], stage=stage)[0]
