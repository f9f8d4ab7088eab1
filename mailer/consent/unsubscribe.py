"""Unsubscribing through a link in a mail: the token says who and from what.

Tokens never expire and keep working after the contact is erased: then the
unsubscribe is kept as a suppression of the address hash.

The link in the List-Unsubscribe header is POSTed by mail providers (RFC 8058), often in
bursts as a campaign goes out. Every case goes through the consent services in the request's
session; a change of state is a conditional UPDATE there (`consent.set_state`), so two
clicks at once change, log and count it once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select, update

from mailer.campaigns.models import Campaign
from mailer.consent import services as consent
from mailer.consent.models import (
    ConsentSource,
    SubscriptionState,
)
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
    """Whom an unsubscribe link speaks for, read from its token (nothing from the database)."""

    address_hash: str
    topic_id: int | None  # None: a Tell-a-Friend mail's "never mail me again"
    campaign_id: int | None = None


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did, for the answer page."""

    scope: Scope
    topic_name: str | None  # the topic left; None for "all mail" and for a blocked address


def read_token(token: str) -> LinkTarget:
    """Resolve an unsubscribe token; raises TokenInvalid for anything not made by us.

    Only the signature is checked: whether the address and topic still exist is the
    business of `unsubscribe()`, which reads them in the statements that act on them.
    """
    payload = verify(Purpose.UNSUBSCRIBE, token)
    if not isinstance(payload, dict) or not isinstance(payload.get("h"), str):
        raise TokenInvalid("malformed payload")
    topic_id = payload.get("t")
    campaign_id = payload.get("c")
    return LinkTarget(payload["h"], topic_id if _is_id(topic_id) else None,
                      campaign_id if _is_id(campaign_id) else None)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def topic_name(target: LinkTarget) -> str | None:
    """The name of the link's topic, for the page that asks before unsubscribing; None for
    a link without one (or whose topic is gone: such a link blocks, see unsubscribe())."""
    if target.topic_id is None:
        return None
    return db.session.scalar(select(Topic.name).where(Topic.id == target.topic_id))


def unsubscribe(target: LinkTarget, scope: Scope, source: ConsentSource) -> Unsubscribed:
    """Withdraw consent as the link holder asked; repeating it changes nothing more. Flushes;
    the request commits.

    A link without a topic comes from a Tell-a-Friend mail: it means "never mail
    me again" and marks the address `blocked`. A campaign's link adds one to the
    campaign's unsubscribe count when it ends a subscription (a count, never who).
    """
    topic = db.session.get(Topic, target.topic_id) if target.topic_id is not None else None
    contact = db.session.scalar(
        select(Contact).where(Contact.address_hash == target.address_hash))
    ended: list[Topic] = []
    if scope is Scope.ALL:
        if contact is not None:
            topics = [s.topic for s in contact.subscriptions
                      if s.state != SubscriptionState.UNSUBSCRIBED]
            ended = consent.unsubscribe(contact, topics, source=source)
        suppressions.suppress(target.address_hash, Reason.LEFT, source=source,
                              contact_id=contact.id if contact else None)
    elif topic is None:
        # A Tell-a-Friend link, or (never made by this code) a link whose topic is gone:
        # "never mail me again", for the address as a whole.
        suppressions.suppress(target.address_hash, Reason.BLOCKED, source=source,
                              contact_id=contact.id if contact else None)
    elif contact is not None:
        ended = consent.unsubscribe(contact, [topic], source=source)
    else:
        suppressions.suppress(target.address_hash, Reason.UNSUBSCRIBED, source=source,
                              topic_id=topic.id)
    if target.campaign_id is not None and ended:
        db.session.execute(update(Campaign).where(Campaign.id == target.campaign_id)
                           .values(unsubscribed=Campaign.unsubscribed + 1))
    db.session.flush()
    return Unsubscribed(scope, topic.name if topic is not None and scope is Scope.TOPIC
                        else None)

