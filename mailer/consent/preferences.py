"""The preference center: what a holder of an address's preferences link may see and change."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from mailer.consent import services as consent
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.consent.services import RequestKind, SubscriptionOutcome
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.tokens import Purpose, TokenInvalid, verify
from mailer.topics.models import Topic
from mailer.topics.services import list_topics


@dataclass(frozen=True)
class Holder:
    """Whom a preferences link speaks for; `contact` is None when nothing is held."""

    address_hash: str
    contact: Contact | None


def read_token(token: str) -> Holder:
    """Resolve a preferences token (never expires); raises TokenInvalid."""
    payload = verify(Purpose.PREFERENCES, token)
    if not isinstance(payload, dict) or not isinstance(payload.get("h"), str):
        raise TokenInvalid("malformed payload")
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == payload["h"]))
    return Holder(payload["h"], contact)


def topics_shown(contact: Contact) -> list[Topic]:
    """The public topics and every topic the contact has a subscription row for."""
    shown = {t.id: t for t in list_topics(public_only=True)}
    for subscription in contact.subscriptions:
        shown.setdefault(subscription.topic_id, subscription.topic)
    return sorted(shown.values(), key=lambda t: t.name.lower())


def states(contact: Contact) -> dict[int, str]:
    return {s.topic_id: s.state for s in contact.subscriptions}


@dataclass(frozen=True)
class Applied:
    """What saving the preference center did: the subscription requests' outcome, and
    whether partner sharing was asked for (it waits for the mailed link)."""

    outcome: SubscriptionOutcome
    asks_sharing: bool

    @property
    def needs_mail(self) -> bool:
        return bool(self.outcome.needs_confirmation) or self.asks_sharing


def apply(contact: Contact, wanted: set[str], partner_sharing: bool) -> Applied:
    """Make the contact's subscriptions among the shown topics match `wanted` (slugs).

    Unticking withdraws consent at once. Ticking a topic asks for it as any
    request does, so a topic with double opt-in, or an address with a mark,
    gets `pending` and a confirmation mail: a forwarded newsletter's link must
    not be enough to sign its reader's friend up. Partner sharing likewise:
    unticked, it is withdrawn at once; ticked, it is only asked for, and granted
    on the page of the confirmation link mailed to the address (the preferences
    link travels with every forwarded mail and never expires).
    """
    current = states(contact)
    shown = topics_shown(contact)
    leave = [t for t in shown
             if t.slug not in wanted and current.get(t.id) in (SubscriptionState.SUBSCRIBED,
                                                                SubscriptionState.PENDING)]
    # A retired topic takes no new subscription: ticking it changes nothing.
    join = [t for t in shown
            if t.slug in wanted and not t.retired
            and current.get(t.id) not in (SubscriptionState.SUBSCRIBED, SubscriptionState.PENDING)]
    consent.unsubscribe(contact, leave, source=ConsentSource.PREFERENCES)
    outcome = consent.request_subscriptions(contact, join, source=ConsentSource.PREFERENCES,
                                            kind=RequestKind.ASK)
    if not partner_sharing:
        consent.set_partner_sharing(contact, False, source=ConsentSource.PREFERENCES)
    db.session.flush()
    return Applied(outcome, asks_sharing=partner_sharing and not contact.partner_sharing)
