"""Double opt-in: the confirm token, and the state change when the address confirms.

The confirmation mail itself goes out through the sending pipeline; this module
makes the token it carries and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.consent.services import set_partner_sharing, set_state, subscription_for
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.services import LIFTED_BY_CONFIRMATION
from mailer.tokens import Purpose, TokenExpired, TokenInvalid, sign, verify
from mailer.topics.models import Topic

DEFAULT_MAX_AGE = 7 * 24 * 3600


@dataclass
class Confirmed:
    contact: Contact
    topics: list[Topic]
    lifted: set[str]


def make_token(contact: Contact, topics: list[Topic], *, partner_sharing: bool = False) -> str:
    """A confirm token for these pending topics of the contact; `partner_sharing` asks for that
    grant too, which then counts only once the address confirms."""
    payload: dict[str, object] = {"h": contact.address_hash,
                                  "t": sorted(topic.id for topic in topics)}
    if partner_sharing:
        payload["p"] = 1
    return sign(Purpose.CONFIRM, payload)


def confirm(token: str) -> Confirmed:
    """Apply a confirm token: pending → subscribed, marks lifted, each change logged.

    Raises tokens.TokenInvalid / TokenExpired, or LookupError when the contact
    is gone. Confirming twice changes nothing the second time.
    """
    max_age = current_app.config.get("MAILER_CONFIRM_MAX_AGE", DEFAULT_MAX_AGE)
    payload = verify(Purpose.CONFIRM, token, max_age=max_age)
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == payload["h"]))
    if contact is None:
        raise LookupError("contact no longer exists")
    topics = list(db.session.scalars(select(Topic).where(Topic.id.in_(payload["t"]),
                                                      Topic.retired_at.is_(None))))
    confirmed: list[Topic] = []
    for topic in topics:
        subscription = subscription_for(contact, topic)
        if subscription is not None and subscription.state == SubscriptionState.PENDING:
            set_state(contact, topic, SubscriptionState.SUBSCRIBED, ConsentSource.CONFIRM)
            confirmed.append(topic)
    if confirmed and payload.get("p"):
        set_partner_sharing(contact, True, source=ConsentSource.CONFIRM)
    lifted: set[str] = set()
    if confirmed:
        lifted = {
            reason.value
            for reason in suppressions.lift(
                contact.address_hash, set(LIFTED_BY_CONFIRMATION),
                source=ConsentSource.CONFIRM, contact_id=contact.id,
            )
        }
    db.session.flush()
    return Confirmed(contact=contact, topics=confirmed, lifted=lifted)


def send_confirmation(contact: Contact, topics: list[Topic], *,
                      partner_sharing: bool = False) -> bool:
    """Queue the double opt-in mail for these pending topics; False when the gate refuses it
    (at most 3 a day per address, or the address bounced). The subscriptions stay pending
    either way."""
    from mailer.consent.gate import Category
    from mailer.messages.services import RecipientSuppressed, SendRequest, accept

    if not topics:
        return False
    base_url = current_app.config["MAILER_BASE_URL"]
    request = SendRequest(
        to=contact.email,
        template="confirm_subscription",
        data={
            "confirm_url": f"{base_url}/confirm/"
                           f"{make_token(contact, topics, partner_sharing=partner_sharing)}",
            "topic_names": [topic.name for topic in topics],
        },
        category=Category.CONFIRMATION,
    )
    try:
        with db.session.begin_nested():
            accept(request)
    except RecipientSuppressed:
        return False
    return True


def resend(token: str) -> None:
    """Queue a fresh confirmation for the still-pending topics of a (usually expired) confirm
    token. Forged tokens, gone contacts and nothing pending do nothing, silently."""
    try:
        payload = verify(Purpose.CONFIRM, token)
    except TokenExpired as exc:
        payload = exc.payload
    except TokenInvalid:
        return
    if not isinstance(payload, dict) or not isinstance(payload.get("h"), str):
        return
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == payload["h"]))
    if contact is None:
        return
    wanted = set(payload.get("t") or [])
    pending = [s.topic for s in contact.subscriptions
               if s.topic_id in wanted and s.state == SubscriptionState.PENDING]
    send_confirmation(contact, pending, partner_sharing=bool(payload.get("p")))
