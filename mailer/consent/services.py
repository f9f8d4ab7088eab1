"""Changing consent: every change sets the current state and appends an event, in one flush."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sqlalchemy import select

from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    Subscription,
    SubscriptionState,
)
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.topics.models import Topic


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


def _log(contact: Contact, subject: ConsentSubject, state: str, source: ConsentSource,
         note: str | None, topic: Topic | None = None) -> None:
    db.session.add(
        ConsentEvent(
            contact_id=contact.id,
            address_hash=contact.address_hash,
            subject=subject,
            topic_id=topic.id if topic is not None else None,
            state=state,
            source=source,
            note=note,
        )
    )


def subscription_for(contact: Contact, topic: Topic) -> Subscription | None:
    """The contact's subscription row for a topic, if any."""
    for subscription in contact.subscriptions:
        if subscription.topic_id == topic.id:
            return subscription
    return None


def set_state(
    contact: Contact, topic: Topic, state: SubscriptionState, source: ConsentSource,
    note: str | None = None,
) -> bool:
    """Move one subscription to `state`, logging the change; False when it was already there."""
    subscription = subscription_for(contact, topic)
    if subscription is None:
        subscription = Subscription(topic=topic, state=state)
        contact.subscriptions.append(subscription)
    elif subscription.state == state:
        return False
    else:
        subscription.state = state
    _log(contact, ConsentSubject.TOPIC, state.value, source, note, topic)
    return True


def request_subscriptions(
    contact: Contact,
    topics: list[Topic],
    *,
    source: ConsentSource,
    note: str | None = None,
    kind: RequestKind = RequestKind.ASK,
) -> SubscriptionOutcome:
    """Ask for the contact's subscription to each topic, following ../shared/CONSENT.md.

    An address with any mark (complained, left, erased, blocked, quarantined,
    bounced) only ever gets `pending`: the mark is lifted by the address's own
    confirmation, never by whoever adds it. A topic the address unsubscribed
    from is `pending` again too when asked for, and an import leaves it alone.
    """
    outcome = SubscriptionOutcome()
    marked = bool(suppressions.marks(contact.address_hash))
    for topic in topics:
        current = subscription_for(contact, topic)
        if current is not None and current.state == SubscriptionState.SUBSCRIBED:
            outcome.states[topic.slug] = current.state
            continue
        if (
            kind is RequestKind.IMPORTED
            and current is not None
            and current.state == SubscriptionState.UNSUBSCRIBED
        ):
            outcome.states[topic.slug] = current.state
            outcome.kept_unsubscribed.append(topic.slug)
            continue
        # Someone who unsubscribed from the topic gets back in only by confirming
        # themselves: a calling service re-sending its whole list must not undo it.
        unsubscribed = current is not None and current.state == SubscriptionState.UNSUBSCRIBED
        needs_confirmation = (
            marked
            or kind is RequestKind.UNVERIFIED
            or (kind is RequestKind.ASK and (topic.double_opt_in or unsubscribed))
        )
        state = SubscriptionState.PENDING if needs_confirmation else SubscriptionState.SUBSCRIBED
        set_state(contact, topic, state, source, note)
        outcome.states[topic.slug] = state
        if needs_confirmation:
            outcome.needs_confirmation.append(topic)
    db.session.flush()
    return outcome


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
    _log(contact, ConsentSubject.PARTNER_SHARING, "granted" if allowed else "withdrawn",
         source, note)
    db.session.flush()


def history(contact: Contact) -> list[ConsentEvent]:
    """Every consent event of a contact and of its address hash, oldest first."""
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.address_hash == contact.address_hash)
            .order_by(ConsentEvent.id)
        )
    )
