"""Unsubscribing through a link in a mail: the token says who and from what.

Tokens never expire and keep working after the contact is erased: then the
unsubscribe is kept as a suppression of the address hash.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select, update

from mailer.campaigns.models import Campaign
from mailer.consent import services as consent
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.tokens import Purpose, TokenInvalid, verify
from mailer.topics.models import Topic


class Scope(enum.Enum):
    TOPIC = "topic"  # the topic of the mail the link came in
    ALL = "all"  # every topic, and a `left` mark so nothing promotional follows


@dataclass(frozen=True)
class LinkTarget:
    """Whom an unsubscribe link speaks for, read from its token."""

    address_hash: str
    topic: Topic | None
    contact: Contact | None
    campaign_id: int | None = None


def read_token(token: str) -> LinkTarget:
    """Resolve an unsubscribe token; raises TokenInvalid for anything not made by us."""
    payload = verify(Purpose.UNSUBSCRIBE, token)
    if not isinstance(payload, dict) or not isinstance(payload.get("h"), str):
        raise TokenInvalid("malformed payload")
    topic_id = payload.get("t")
    topic = db.session.get(Topic, topic_id) if isinstance(topic_id, int) else None
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == payload["h"]))
    campaign_id = payload.get("c") if isinstance(payload.get("c"), int) else None
    return LinkTarget(payload["h"], topic, contact, campaign_id)


def unsubscribe(target: LinkTarget, scope: Scope, source: ConsentSource) -> None:
    """Withdraw consent as the link holder asked; repeating it changes nothing more.

    A link without a topic comes from a Tell-a-Friend mail: it means "never mail
    me again" and marks the address `blocked`.
    """
    contact = target.contact
    subscribed_before = _subscribed_topics(contact)
    if scope is Scope.ALL:
        if contact is not None:
            topics = [s.topic for s in contact.subscriptions
                      if s.state != SubscriptionState.UNSUBSCRIBED]
            consent.unsubscribe(contact, topics, source=source)
        suppressions.suppress(target.address_hash, Reason.LEFT, source=source,
                              contact_id=contact.id if contact else None)
    elif target.topic is None:
        suppressions.suppress(target.address_hash, Reason.BLOCKED, source=source,
                              contact_id=contact.id if contact else None)
    elif contact is not None:
        consent.unsubscribe(contact, [target.topic], source=source)
    else:
        suppressions.suppress(target.address_hash, Reason.UNSUBSCRIBED, source=source,
                              topic_id=target.topic.id)
    if target.campaign_id is not None and subscribed_before - _subscribed_topics(contact):
        # The campaign's unsubscribe figure: a count, never who.
        db.session.execute(
            update(Campaign).where(Campaign.id == target.campaign_id)
            .values(unsubscribed=Campaign.unsubscribed + 1)
            .execution_options(synchronize_session=False)
        )
    db.session.flush()


def _subscribed_topics(contact: Contact | None) -> set[int]:
    if contact is None:
        return set()
    return {s.topic_id for s in contact.subscriptions if s.state == SubscriptionState.SUBSCRIBED}
