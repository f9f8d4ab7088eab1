"""Changing consent: every change sets the current state and appends an event, in one flush."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm.attributes import set_committed_value

from mailer.consent import gate
from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    Subscription,
    SubscriptionState,
)
from mailer.contacts.models import Contact
from mailer.database import DIALECTS, dialect_of, utcnow
from mailer.extensions import db
from mailer.topics.models import Topic
from mailer.topics.services import refuse_retired
from mailer.webhooks import services as webhooks


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
    # Topics this request moved to `subscribed` (single opt-in): their welcome mail went out.
    subscribed: list[Topic] = field(default_factory=list)


# Statements of consent changes, built once with bind parameters (building a statement each
# time cost more than SQLite running it).
_INSERT_EVENT = insert(ConsentEvent.__table__)  # a log row: nothing of it is read back
# A contact's first row for a topic. ON CONFLICT DO NOTHING: the loser of a race for it waits
# for the winner's commit (PostgreSQL, at the unique index; SQLite, for the write lock), gets
# no row back and never a unique violation (a 500).
_INSERT_SUBSCRIPTION = {
    name: dialect.insert(Subscription)
    .values({column: bindparam(column) for column in (
        "contact_id", "topic_id", "state", "created_at", "updated_at")})
    .on_conflict_do_nothing(index_elements=["contact_id", "topic_id"])
    .returning(Subscription)
    for name, dialect in DIALECTS.items()
}
# A subscription's change of state, only from the state we read: two concurrent requests (two
# clicks of one link) never both make, log and count the same change. The session's object
# is then set to what was written.
_CHANGE_STATE = (
    update(Subscription)
    .where(Subscription.id == bindparam("p_id"), Subscription.state == bindparam("p_from"))
    .values(state=bindparam("p_to"), updated_at=bindparam("p_now"))
    .execution_options(synchronize_session=False)
)
_SUBSCRIPTION = select(Subscription).where(Subscription.contact_id == bindparam("contact_id"),
                                           Subscription.topic_id == bindparam("topic_id"))


def _contact_id(contact: Contact) -> int:
    if contact.id is None:  # a contact added but not flushed yet
        db.session.flush()
    return contact.id


def _log(contact: Contact, subject: ConsentSubject, state: str, source: ConsentSource,
         note: str | None, topic: Topic | None = None) -> None:
    db.session.execute(_INSERT_EVENT, {
        "contact_id": _contact_id(contact), "address_hash": contact.address_hash,
        "subject": subject.value, "topic_id": topic.id if topic is not None else None,
        "state": state, "source": source.value, "note": note, "created_at": utcnow(),
    })


def subscription_for(contact: Contact, topic: Topic) -> Subscription | None:
    """The contact's subscription row for a topic, if any."""
    for subscription in contact.subscriptions:
        if subscription.topic_id == topic.id:
            return subscription
    return None


class _RowChanged(Exception):
    """A concurrent request made or changed the contact's row for the topic between our read
    and our write; the row as it is now is among the contact's loaded subscriptions."""


def _insert_subscription(contact: Contact, topic: Topic, state: SubscriptionState,
                         now: dt.datetime) -> Subscription:
    """Write the contact's first row for the topic and return it; raise _RowChanged, with the
    winner's row loaded, when a concurrent request made it first."""
    key = {"contact_id": _contact_id(contact), "topic_id": topic.id}
    subscription = db.session.scalar(_INSERT_SUBSCRIPTION[dialect_of(db.session)], {
        **key, "state": state.value, "created_at": now, "updated_at": now})
    if subscription is None:
        # Read after our INSERT waited for the winner's commit: its row is visible now.
        winner = db.session.scalars(_SUBSCRIPTION, key).one()
        set_committed_value(contact, "subscriptions", [*contact.subscriptions, winner])
        raise _RowChanged()
    # The rows as the database holds them now: set as loaded, not as changes to write (which
    # the next flush would only find to be no change, at a cost).
    set_committed_value(subscription, "topic", topic)
    set_committed_value(contact, "subscriptions", [*contact.subscriptions, subscription])
    return subscription


def _set_state(contact: Contact, topic: Topic, state: SubscriptionState,
               source: ConsentSource, note: str | None) -> bool:
    """set_state(), raising _RowChanged when the row was made or changed meanwhile."""
    subscription = subscription_for(contact, topic)
    now = utcnow()
    if subscription is None:
        _insert_subscription(contact, topic, state, now)
    elif subscription.state == state:
        return False
    else:
        if subscription in db.session.dirty:
            db.session.flush()  # changed elsewhere through the ORM: that goes first
        changed = db.session.execute(_CHANGE_STATE, {
            "p_id": subscription.id, "p_from": subscription.state, "p_to": state.value,
            "p_now": now}).rowcount
        if not changed:
            db.session.refresh(subscription)
            raise _RowChanged()
        set_committed_value(subscription, "state", state.value)
        set_committed_value(subscription, "updated_at", now)
    _log(contact, ConsentSubject.TOPIC, state.value, source, note, topic)
    webhooks.contact_subscription_changed(contact, topic, state.value)
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
    except _RowChanged:
        return _set_state(contact, topic, state, source, note)  # from the row as it is now


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

    `marked` is whether the address has such a mark (`gate.needs_own_confirmation`), when
    the caller has just read it; otherwise it is read here.
    """
    outcome = SubscriptionOutcome()
    if not topics:
        return outcome
    refuse_retired(topics)
    if marked is None:
        marked = bool(db.session.scalar(select(gate.needs_own_confirmation(
            contact.address_hash))))
    for topic in topics:
        try:
            _ask(contact, topic, outcome, marked=marked, kind=kind, source=source, note=note)
        except _RowChanged:
            # A concurrent request made or changed the row after we read it: ask again, from
            # the row as it is now (it may be subscribed, or unsubscribed).
            _ask(contact, topic, outcome, marked=marked, kind=kind, source=source, note=note)
    if outcome.subscribed and kind is not RequestKind.IMPORTED:
        from mailer.topics.welcome import send_welcomes  # it sends through messages.services
        send_welcomes(contact.email, outcome.subscribed)
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
    else:
        outcome.subscribed.append(topic)


def unsubscribe(
    contact: Contact, topics: list[Topic], *, source: ConsentSource, note: str | None = None
) -> list[Topic]:
    """Withdraw consent for each topic (a topic never asked for gets an unsubscribed row too).

    Returns the topics whose subscription this call ended (they were `subscribed`); a
    concurrent request that ended one first has it, not this call."""
    ended = []
    for topic in topics:
        current = subscription_for(contact, topic)
        was_subscribed = current is not None and current.state == SubscriptionState.SUBSCRIBED
        if set_state(contact, topic, SubscriptionState.UNSUBSCRIBED, source, note) \
                and was_subscribed:
            ended.append(topic)
    db.session.flush()
    return ended


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
