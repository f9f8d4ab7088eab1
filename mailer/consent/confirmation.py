"""Double opt-in: the confirm token, and the state change when the address confirms.

The confirmation mail itself goes out through the sending pipeline; this module
makes the token it carries and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from mailer.topics.welcome import send_welcomes

DEFAULT_MAX_AGE = 7 * 24 * 3600


@dataclass
class Confirmed:
    contact: Contact
    topics: list[Topic]
    lifted: set[str]
    sharing_granted: bool = False


@dataclass
class Asked:
    """What a confirm token asks the address to confirm, for the page its link opens.

    `topics` are the token's topics still pending (the rest were confirmed already, or
    withdrawn since); `asks_sharing` is whether the token asks for partner sharing and the
    contact does not share yet. Nothing to confirm when both are empty.
    """

    contact: Contact
    topics: list[Topic]
    asks_sharing: bool

    @property
    def nothing_left(self) -> bool:
        return not self.topics and not self.asks_sharing


def make_token(contact: Contact, topics: list[Topic], *, partner_sharing: bool = False) -> str:
    """A confirm token for these pending topics of the contact; `partner_sharing` asks for that
    grant too, which the address then gives (or not) on the confirmation page.

    The payload is the one links mailed before the confirmation page existed carry, so those
    links open the page and confirm on its button as new ones do."""
    payload: dict[str, object] = {"h": contact.address_hash,
                                  "t": sorted(topic.id for topic in topics)}
    if partner_sharing:
        payload["p"] = 1
    return sign(Purpose.CONFIRM, payload)


def _read(token: str) -> tuple[dict[str, Any], Contact]:
    max_age = current_app.config.get("MAILER_CONFIRM_MAX_AGE", DEFAULT_MAX_AGE)
    payload = verify(Purpose.CONFIRM, token, max_age=max_age)
    if (not isinstance(payload, dict) or not isinstance(payload.get("h"), str)
            or not isinstance(payload.get("t", []), list)):
        raise TokenInvalid("malformed payload")
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == payload["h"]))
    if contact is None:
        raise LookupError("contact no longer exists")
    return payload, contact


def _topics_of(payload: dict[str, Any]) -> list[Topic]:
    ids = [i for i in payload.get("t") or [] if isinstance(i, int) and not isinstance(i, bool)]
    if not ids:
        return []
    # A retired topic takes no new subscription, not even through a link mailed before.
    return list(db.session.scalars(
        select(Topic).where(Topic.id.in_(ids), Topic.retired_at.is_(None)).order_by(Topic.name)))


def read(token: str) -> Asked:
    """What the token asks to confirm, changing nothing (a GET of the mailed link: mail
    scanners follow links). Raises as confirm() does."""
    payload, contact = _read(token)
    pending = [topic for topic in _topics_of(payload)
               if (subscription := subscription_for(contact, topic)) is not None
               and subscription.state == SubscriptionState.PENDING]
    return Asked(contact, pending,
                 asks_sharing=bool(payload.get("p")) and not contact.partner_sharing)


def confirm(token: str, *, share: bool = False) -> Confirmed:
    """Apply a confirm token: pending → subscribed, marks lifted, each change logged; with
    `share` (the box the owner ticked on the confirmation page) and a token that asked for
    it, partner sharing is granted too.

    Only the POST of the confirmation page calls this. Raises tokens.TokenInvalid /
    TokenExpired, or LookupError when the contact is gone. Confirming twice changes nothing
    the second time.
    """
    payload, contact = _read(token)
    confirmed: list[Topic] = []
    for topic in _topics_of(payload):
        subscription = subscription_for(contact, topic)
        if subscription is not None and subscription.state == SubscriptionState.PENDING:
            set_state(contact, topic, SubscriptionState.SUBSCRIBED, ConsentSource.CONFIRM)
            confirmed.append(topic)
    granted = bool(share and payload.get("p") and not contact.partner_sharing)
    if granted:
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
        # After the marks are lifted: the gate judges the welcome mail as promotional mail.
        send_welcomes(contact.email, confirmed)
    db.session.flush()
    return Confirmed(contact=contact, topics=confirmed, lifted=lifted, sharing_granted=granted)


def send_confirmation(contact: Contact, topics: list[Topic], *,
                      partner_sharing: bool = False) -> bool:
    """Queue the double opt-in mail for these pending topics and, with `partner_sharing`, for
    the partner-sharing grant (a mail for that alone when no topic is pending); False when
    there is nothing to ask or the gate refuses it (the daily cap of confirmation mails, or
    the address bounced). The subscriptions stay pending, and sharing off, either way."""
    from mailer.messages.models import Category
    from mailer.messages.services import RecipientSuppressed, SendRequest, accept

    if not topics and not partner_sharing:
        return False
    base_url = current_app.config["MAILER_BASE_URL"]
    request = SendRequest(
        to=contact.email,
        template="confirm_subscription",
        data={
            "confirm_url": f"{base_url}/confirm/"
                           f"{make_token(contact, topics, partner_sharing=partner_sharing)}",
            "topic_names": [topic.name for topic in topics],
            "partner_sharing": partner_sharing,
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
    """Queue a fresh confirmation for the still-pending topics (and the sharing ask) of a
    (usually expired) confirm token. Forged tokens, gone contacts and nothing left to ask do
    nothing, silently."""
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
    send_confirmation(contact, pending,
                      partner_sharing=bool(payload.get("p")) and not contact.partner_sharing)
