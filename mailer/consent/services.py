"""Changing consent: every change sets the current state and appends an event, in one flush."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.attributes import set_committed_value

from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    Subscription,
    SubscriptionState,
)
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.driver_statements import DriverStatement
from mailer.extensions import attach_inserted, db
from mailer.suppressions import services as suppressions
from mailer.topics.models import Topic
from mailer.topics.services import refuse_retired


class RequestKind(enum.Enum):
    """How much consent a subscription request carries."""

    # A calling service or the signup page asks: the topic's double opt-in
    # setting decides between pending and subscribed.
    ASK = "ask"
    # An operator imports addresses whose consent was collected elsewhere. An
    # explicit unsubscribe is never overridden by an import.
    IMPORTED = "imported"
    # Anyone can type any address into a public form: the address itself must
    # confirm, whatever the topic's own setting.
    UNVERIFIED = "unverified"


@dataclass
class SubscriptionOutcome:
    """What a batch of subscription requests did; `needs_confirmation` wants a confirmation mail."""

    states: dict[str, str] = field(default_factory=dict)
    needs_confirmation: list[Topic] = field(default_factory=list)
    kept_unsubscribed: list[str] = field(default_factory=list)


# Consent changes are written through with Core statements built once, and the session's
# objects are set to what was written: the ORM's unit of work cost several times the INSERTs
# themselves on the paths that create a contact or unsubscribe one.
_subscriptions = Subscription.__table__
_events = ConsentEvent.__table__
# A contact's first row for a topic: ON CONFLICT DO NOTHING on (contact, topic), so a
# concurrent request making the same row first never costs a unique violation (a 500); the
# loser waits for the winner's commit (PostgreSQL, at the unique index; SQLite, for the write
# lock), gets no id back, and reads the winner's row instead.
_INSERT_SUBSCRIPTION = {
    name: (
        dialect.insert(_subscriptions)
        .values(contact_id=bindparam("p_contact"), topic_id=bindparam("p_topic"),
                state=bindparam("p_state"), created_at=bindparam("p_now"),
                updated_at=bindparam("p_now"))
        .on_conflict_do_nothing(index_elements=[_subscriptions.c.contact_id,
                                                _subscriptions.c.topic_id])
        .returning(_subscriptions.c.id)
    )
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_SUBSCRIPTION_OF = select(Subscription).where(Subscription.contact_id == bindparam("p_contact"),
                                               Subscription.topic_id == bindparam("p_topic"))
_UPDATE_SUBSCRIPTION = (
    update(_subscriptions)
    .where(_subscriptions.c.id == bindparam("p_id"))
    .values(state=bindparam("p_state"), updated_at=bindparam("p_now"))
)
# One consent event, every column a parameter.
INSERT_EVENT = insert(_events).values(
    contact_id=bindparam("p_contact"), address_hash=bindparam("p_hash"),
    subject=bindparam("p_subject"), topic_id=bindparam("p_topic"), state=bindparam("p_state"),
    source=bindparam("p_source"), note=bindparam("p_note"), created_at=bindparam("p_now"),
)
# The same on the driver's cursor, for the hottest writes on SQLite (new contacts, one-clicks).
RUN_INSERT_EVENT = DriverStatement(INSERT_EVENT)


def _contact_id(contact: Contact) -> int:
    if contact.id is None:  # a contact added but not flushed yet
        db.session.flush()
    return contact.id


def _log(contact: Contact, subject: ConsentSubject, state: str, source: ConsentSource,
         note: str | None, topic: Topic | None = None) -> None:
    db.session.execute(INSERT_EVENT, {
        "p_contact": _contact_id(contact), "p_hash": contact.address_hash,
        "p_subject": subject.value, "p_topic": topic.id if topic is not None else None,
        "p_state": state, "p_source": source.value, "p_note": note, "p_now": utcnow(),
    })


def subscription_for(contact: Contact, topic: Topic) -> Subscription | None:
    """The contact's subscription row for a topic, if any."""
    for subscription in contact.subscriptions:
        if subscription.topic_id == topic.id:
            return subscription
    return None


class _RowAppeared(Exception):
    """A concurrent request made the contact's first row for the topic between our read of
    none and our INSERT; the row is among the contact's loaded subscriptions now."""


def _insert_subscription(contact: Contact, topic: Topic, state: SubscriptionState,
                         now: dt.datetime) -> Subscription:
    """Write the contact's first row for the topic and return it as the session's object; raise
    _RowAppeared, with the winner's row loaded, when a concurrent request made it first."""
    contact_id = _contact_id(contact)
    params = {"p_contact": contact_id, "p_topic": topic.id}
    statement = _INSERT_SUBSCRIPTION[db.session.get_bind().dialect.name]
    new_id = db.session.execute(statement, {**params, "p_state": state.value, "p_now": now}
                                ).scalar()
    if new_id is None:
        # Read after our INSERT waited for the winner's commit: its row is visible now.
        winner = db.session.scalars(_SUBSCRIPTION_OF, params).one()
        set_committed_value(contact, "subscriptions", [*contact.subscriptions, winner])
        raise _RowAppeared()
    subscription = attach_inserted(Subscription, {
        "id": new_id, "contact_id": contact_id, "topic_id": topic.id, "state": state.value,
        "created_at": now, "updated_at": now,
    })
    set_committed_value(subscription, "topic", topic)
    set_committed_value(subscription, "contact", contact)
    set_committed_value(contact, "subscriptions", [*contact.subscriptions, subscription])
    return subscription


def _set_state(contact: Contact, topic: Topic, state: SubscriptionState,
               source: ConsentSource, note: str | None) -> bool:
    """set_state(), raising _RowAppeared when the first row for the topic was made meanwhile."""
    subscription = subscription_for(contact, topic)
    now = utcnow()
    if subscription is None:
        _insert_subscription(contact, topic, state, now)
    elif subscription.state == state:
        return False
    else:
        if subscription.id is None or subscription in db.session.dirty:
            db.session.flush()  # added or changed elsewhere through the ORM: write that first
        db.session.execute(_UPDATE_SUBSCRIPTION,
                           {"p_id": subscription.id, "p_state": state.value, "p_now": now})
        set_committed_value(subscription, "state", state.value)
        set_committed_value(subscription, "updated_at", now)
    _log(contact, ConsentSubject.TOPIC, state.value, source, note, topic)
    return True


def set_state(
    contact: Contact, topic: Topic, state: SubscriptionState, source: ConsentSource,
    note: str | None = None,
) -> bool:
    """Move one subscription to `state`, logging the change; False when it was already there.

    Written at once; the contact's loaded subscriptions show the change as committed state.
    A first row for the topic that a concurrent request makes meanwhile is moved like any row
    that existed.
    """
    try:
        return _set_state(contact, topic, state, source, note)
    except _RowAppeared:
        return _set_state(contact, topic, state, source, note)  # now an update of that row


def request_subscriptions(
    contact: Contact,
    topics: list[Topic],
    *,
    source: ConsentSource,
    note: str | None = None,
    kind: RequestKind = RequestKind.ASK,
    marked: bool | None = None,
) -> SubscriptionOutcome:
    """Ask for the contact's subscription to each topic, following ../shared/CONSENT.md.

    An address with any mark (complained, left, erased, blocked, quarantined,
    bounced) only ever gets `pending`: the mark is lifted by the address's own
    confirmation, never by whoever adds it. A topic the address unsubscribed
    from is `pending` again too when asked for, and an import leaves it alone.

    `marked` is whether the address has a mark, when the caller has just read it
    (`suppressions.marks()`); otherwise it is read here. Nothing is flushed: the
    changes go out with the caller's next flush or commit.
    """
    outcome = SubscriptionOutcome()
    if not topics:
        return outcome
    refuse_retired(topics)
    if marked is None:
        # A read among writes: it must not flush them (and, on SQLite, take the write lock)
        # early. Marks are only ever added with a flush, so none can be pending here.
        with db.session.no_autoflush:
            marked = bool(suppressions.marks(contact.address_hash))
    for topic in topics:
        try:
            _ask(contact, topic, outcome, marked=marked, kind=kind, source=source, note=note)
        except _RowAppeared:
            # A concurrent request made the first row for the topic after we read none: ask
            # again, as for a row that was there (it may be subscribed, or unsubscribed).
            _ask(contact, topic, outcome, marked=marked, kind=kind, source=source, note=note)
    return outcome


def requested_state(current: str | None, *, double_opt_in: bool, marked: bool,
                    kind: RequestKind) -> SubscriptionState | None:
    """The state a request for a topic (`double_opt_in`: the topic's setting) moves a
    subscription in state `current` (None: no row yet) to, following ../shared/CONSENT.md;
    None when the request leaves it as it is (it is subscribed, or an import finds it
    unsubscribed). `pending` means the address must confirm.
    """
    if current == SubscriptionState.SUBSCRIBED:
        return None
    unsubscribed = current == SubscriptionState.UNSUBSCRIBED
    if kind is RequestKind.IMPORTED and unsubscribed:
        return None
    # Someone who unsubscribed from the topic gets back in only by confirming
    # themselves: a calling service re-sending its whole list must not undo it.
    needs_confirmation = (
        marked
        or kind is RequestKind.UNVERIFIED
        or (kind is RequestKind.ASK and (double_opt_in or unsubscribed))
    )
    return SubscriptionState.PENDING if needs_confirmation else SubscriptionState.SUBSCRIBED


def _ask(contact: Contact, topic: Topic, outcome: SubscriptionOutcome, *, marked: bool,
         kind: RequestKind, source: ConsentSource, note: str | None) -> None:
    """Ask for one subscription (see request_subscriptions), recording it in `outcome`."""
    current = subscription_for(contact, topic)
    state = requested_state(current.state if current is not None else None,
                            double_opt_in=topic.double_opt_in, marked=marked, kind=kind)
    if state is None:
        assert current is not None
        outcome.states[topic.slug] = current.state
        if current.state == SubscriptionState.UNSUBSCRIBED:
            outcome.kept_unsubscribed.append(topic.slug)
        return
    _set_state(contact, topic, state, source, note)
    outcome.states[topic.slug] = state
    if state is SubscriptionState.PENDING:
        outcome.needs_confirmation.append(topic)


def unsubscribe(
    contact: Contact, topics: list[Topic], *, source: ConsentSource, note: str | None = None
) -> None:
    """Withdraw consent for each topic (a topic never asked for gets an unsubscribed row too)."""
    for topic in topics:
        set_state(contact, topic, SubscriptionState.UNSUBSCRIBED, source, note)
    db.session.flush()


def set_partner_sharing(
    contact: Contact, allowed: bool, *, source: ConsentSource, note: str | None = None
) -> None:
    """Grant or withdraw consent to share the address with partners, logging a change."""
    if contact.partner_sharing == allowed:
        return
    contact.partner_sharing = allowed
    log_partner_sharing(contact, source=source, note=note)


def log_partner_sharing(contact: Contact, *, source: ConsentSource,
                        note: str | None = None) -> None:
    """Log the contact's current partner-sharing consent as a change (a new contact made with
    it granted logs this instead of changing it afterwards)."""
    _log(contact, ConsentSubject.PARTNER_SHARING,
         "granted" if contact.partner_sharing else "withdrawn", source, note)


def history(contact: Contact) -> list[ConsentEvent]:
    """Every consent event of a contact and of its address hash, oldest first."""
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.address_hash == contact.address_hash)
            .order_by(ConsentEvent.id)
        )
    )
