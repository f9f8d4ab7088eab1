"""The consent gate: the one decision, for every mail, of whether it may go to an address.

Every sending path calls `check()` (or `check_many()` for a batch) when a send
is accepted and again in the worker just before SMTP. The rules are the table
of ../shared/CONSENT.md; `decide()` is that table as code, and its tests read
like the table.

The same rule is offered as SQL conditions, for the statements that pick many addresses at
once: `promotional_allowed()` (a campaign's fan-out), `notice_allowed()` (a notice's fan-out)
and `needs_own_confirmation()` (creating and importing contacts). No other module keeps a
list of refusing marks; tests/consent/test_gate_sql.py proves the conditions and `decide()`
agree on every row of the table.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, false, func, or_, select

from mailer import metrics
from mailer.consent.models import Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Category, Message
from mailer.suppressions.models import Reason, Suppression

CONFIRMATIONS_PER_DAY = 3
# The confirmation mails that are counted apart from the others, each against its own cap: so
# that asking for preference links cannot silence someone's subscription confirmations.
SEPARATELY_CAPPED_TEMPLATES = frozenset({"preference_link"})
REFERRAL_INTERVAL = dt.timedelta(days=30)


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
    template: str | None = None  # for confirmation mails: which cap counts it
    # A campaign's test mail to a test recipient (campaigns.testing): promotional mail that
    # needs no subscription, but every mark and an unsubscribe from the topic still refuse it.
    test_recipient: bool = False


def confirmation_kind(template: str | None) -> str:
    """The kind a confirmation mail of `template` is capped as: its own template when it is
    capped apart (SEPARATELY_CAPPED_TEMPLATES), else the subscription confirmations' kind."""
    return template if template in SEPARATELY_CAPPED_TEMPLATES else "confirmation"


# The address-wide marks that refuse promotional mail, in the order a reason is reported.
# A quarantined address reads `not_subscribed`: the reason never tells that a referral
# happened (CONSENT.md r2).
_PROMOTIONAL_REFUSALS = (
    (Reason.BOUNCED, "bounced"),
    (Reason.COMPLAINED, "complained"),
    (Reason.LEFT, "unsubscribed"),
    (Reason.ERASED, "erased"),
    (Reason.BLOCKED, "blocked"),
    (Reason.QUARANTINED, "not_subscribed"),
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
    subscribed_to_any: bool = False,
) -> Decision:
    """The rule table: may a mail of `category` go to an address with these marks and state?

    `confirmations_today`: for a confirmation mail, those of its kind (see
    `confirmation_kind`) accepted for the address in the last day. `subscribed_to_any`: for a
    notice, whether the address is a contact `subscribed` to at least one topic."""
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
    if category is Category.NOTICE:
        # Every address-wide mark refuses a notice; the reasons are the promotional column's,
        # so a quarantined address reads `not_subscribed` here too.
        for reason, label in _PROMOTIONAL_REFUSALS:
            if reason in address_marks:
                return Decision(False, label)
        if not subscribed_to_any:
            return Decision(False, "not_subscribed")
        return ALLOW
    raise ValueError(f"unknown category {category!r}")


_suppressions = Suppression.__table__.c
_contacts = Contact.__table__.c
_subscriptions = Subscription.__table__.c


def needs_own_confirmation(address_hash: Any) -> ColumnElement[bool]:
    """SQL: the address carries an address-wide mark, so that no calling service, marketer or
    import can subscribe it: a new subscription stays `pending` and only the address's own
    confirmation (double opt-in) subscribes it, and lifts the mark (CONSENT.md). Every
    address-wide mark counts: `complained`, `left`, `erased`, `blocked` and `quarantined`,
    which that confirmation lifts, and `bounced`, which only an operator lifts.

    `address_hash`: a column (of contacts, of an import's staging table) or a value. The same
    rule in Python is `has_mark_needing_own_confirmation()`.
    """
    return exists().where(_suppressions.address_hash == address_hash,
                          _suppressions.topic_id.is_(None))


def has_mark_needing_own_confirmation(marks: Iterable[Mark]) -> bool:
    """Python's `needs_own_confirmation()`: whether any of an address's marks is address-wide."""
    return any(mark.topic_id is None for mark in marks)


def refuses_promotional(address_hash: Any, topic_id: Any) -> ColumnElement[bool]:
    """SQL: the address carries a mark that refuses promotional mail for the topic: one of
    the address-wide marks of `decide()`'s promotional column, or the topic's own
    `unsubscribed` mark. `address_hash` and `topic_id`: columns or values."""
    return exists().where(
        _suppressions.address_hash == address_hash,
        or_(and_(_suppressions.topic_id.is_(None),
                 _suppressions.reason.in_([reason.value for reason, _ in _PROMOTIONAL_REFUSALS])),
            and_(_suppressions.topic_id == topic_id,
                 _suppressions.reason == Reason.UNSUBSCRIBED.value)),
    )


def promotional_allowed(address_hash: Any, topic_id: Any, *,
                        subscription_state: Any = None) -> ColumnElement[bool]:
    """SQL: `decide()` allows a promotional mail for the topic to the address: it is
    `subscribed` to the topic and no mark refuses it (`refuses_promotional`).

    `subscription_state`: the state column of the address's subscription to the topic, when
    the statement has joined it already (a fan-out does); without it, it is looked up.
    """
    if topic_id is None:
        return false()
    if subscription_state is None:
        subscribed = exists().where(
            _contacts.address_hash == address_hash,
            _subscriptions.contact_id == _contacts.id,
            _subscriptions.topic_id == topic_id,
            _subscriptions.state == SubscriptionState.SUBSCRIBED.value,
        )
    else:
        subscribed = subscription_state == SubscriptionState.SUBSCRIBED.value
    return and_(subscribed, ~refuses_promotional(address_hash, topic_id))


def notice_allowed(address_hash: Any) -> ColumnElement[bool]:
    """SQL: `decide()` allows a notice to the address: it is a contact `subscribed` to at least
    one topic and carries no address-wide mark (CONSENT.md's notice column; a topic's own
    `unsubscribed` mark does not refuse a notice). `address_hash`: a column or a value."""
    subscribed = exists().where(
        _contacts.address_hash == address_hash,
        _subscriptions.contact_id == _contacts.id,
        _subscriptions.state == SubscriptionState.SUBSCRIBED.value,
    )
    return and_(subscribed, ~needs_own_confirmation(address_hash))


# Statements of the gate, built once: building and caching-keying a statement on every call
# cost more than SQLite running it. Core columns, not ORM entities: rows, not objects, are
# what the rules read, and the ORM's result processing cost as much again.
_MARK_COLUMNS = (_suppressions.address_hash, _suppressions.reason, _suppressions.topic_id,
                 _suppressions.created_at)
# One address (every send through the API) needs no IN list to be expanded into the SQL.
_MARKS_OF_ONE = select(*_MARK_COLUMNS).where(_suppressions.address_hash == bindparam("hash"))
_MARKS_OF_MANY = select(*_MARK_COLUMNS).where(
    _suppressions.address_hash.in_(bindparam("hashes", expanding=True)))
_CONTACTS_BY_HASH = select(_contacts.id, _contacts.address_hash).where(
    _contacts.address_hash.in_(bindparam("hashes", expanding=True)))
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


def _subscribed_to_any(hashes: set[str]) -> set[str]:
    """The hashes among `hashes` of contacts `subscribed` to at least one topic."""
    if not hashes:
        return set()
    return set(db.session.scalars(
        select(_contacts.address_hash).where(
            _contacts.address_hash.in_(list(hashes)),
            exists().where(_subscriptions.contact_id == _contacts.id,
                           _subscriptions.state == SubscriptionState.SUBSCRIBED.value))))


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
def _confirmations_statement() -> Select[tuple[str, str, int]]:
    """Built once, at first use."""
    messages = Message.__table__.c
    return (
        select(messages.address_hash, messages.template, func.count())
        .where(
            messages.address_hash.in_(bindparam("hashes", expanding=True)),
            messages.category == Category.CONFIRMATION.value,
            messages.created_at >= bindparam("since", type_=messages.created_at.type),
            messages.status.not_in(["suppressed", "cancelled"]),
        )
        .group_by(messages.address_hash, messages.template)
    )


def _confirmations_today(hashes: set[str]) -> dict[tuple[str, str], int]:
    """Confirmation mails accepted in the last day, by (address hash, confirmation_kind)."""
    if not hashes:
        return {}
    since = utcnow() - dt.timedelta(days=1)
    rows = db.session.execute(_confirmations_statement(), {"hashes": list(hashes), "since": since})
    counted: dict[tuple[str, str], int] = defaultdict(int)
    for address_hash, template, count in rows:
        counted[address_hash, confirmation_kind(template)] += count
    return counted


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
    subscribed_somewhere = _subscribed_to_any(
        {r.address_hash for r in requests if r.category is Category.NOTICE})
    confirmations: dict[tuple[str, str], int] = {}
    if stage is Stage.ACCEPT:
        confirmations = _confirmations_today(
            {r.address_hash for r in requests if r.category is Category.CONFIRMATION}
        )
    now = utcnow()
    decisions = [
        decide(
            r.category,
            marks.get(r.address_hash, ()),
            topic_id=r.topic_id,
            subscription=states.get((r.address_hash, r.topic_id)) if r.topic_id else None,
            confirmations_today=confirmations.get(
                (r.address_hash, confirmation_kind(r.template)), 0),
            now=now,
            stage=stage,
            test_recipient=r.test_recipient,
            subscribed_to_any=r.address_hash in subscribed_somewhere,
        )
        for r in requests
    ]
    for decision in decisions:
        if not decision.allowed:
            metrics.record_gate_refusal(stage.value, decision.reason or "refused")
    return decisions


def check(
    address_hash: str, category: Category, topic_id: int | None = None, *,
    stage: Stage = Stage.ACCEPT, template: str | None = None, test_recipient: bool = False,
) -> Decision:
    """Decide one mail; see check_many. `template` decides which cap a confirmation mail
    counts against."""
    return check_many([Request(address_hash, category, topic_id, template=template,
                               test_recipient=test_recipient)], stage=stage)[0]
