"""What a mail holds: the render context, the unsubscribe footer, and the headers.

Used at accept (to refuse a mail that cannot be rendered) and in the worker (to
render each recipient's mail just before SMTP), so both see the same mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from markupsafe import escape

from mailer.errors import ValidationFailed
from mailer.messages.mime import OutgoingMail
from mailer.messages.models import Category
from mailer.messages.render import Rendered, renderer
from mailer.tokens import Purpose, sign

FOOTER_TEMPLATE = "_footer"
# A Tell-a-Friend mail: its link means "never mail me again", not a topic.
REFERRAL_FOOTER_TEMPLATE = "_referral_footer"
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


class NotConfigured(ValidationFailed):
    """A setting the mail needs is missing (422, with the setting named)."""

    code = "not_configured"


@dataclass(frozen=True, slots=True)
class TopicInfo:
    id: int
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """The recipient side of one mail: who it goes to, and under which public id."""

    public_id: str
    to_address: str
    address_hash: str
    category: Category
    template: str
    data: dict[str, Any]
    topic: TopicInfo | None = None
    # The campaign a mail belongs to: its unsubscribe link counts towards the campaign's
    # (aggregate) unsubscribe figure.
    campaign_id: int | None = None
    # A campaign's test mail: sent to whoever asked for it as transactional mail, but
    # rendered exactly as the promotional mail, with "[TEST]" before the subject.
    test: bool = False


TEST_SUBJECT_PREFIX = "[TEST] "


def unsubscribe_token(address_hash: str, topic_id: int | None,
                      campaign_id: int | None = None) -> str:
    """The never-expiring token of the unsubscribe link (works after erasure too)."""
    payload: dict[str, Any] = {"h": address_hash, "t": topic_id}
    if campaign_id is not None:
        payload["c"] = campaign_id
    return sign(Purpose.UNSUBSCRIBE, payload)


def preferences_token(address_hash: str) -> str:
    return sign(Purpose.PREFERENCES, {"h": address_hash})


def sender_address(config: Any = None) -> str:
    """MAILER_FROM, or NotConfigured."""
    sender = (current_app.config if config is None else config).get("MAILER_FROM")
    if not sender:
        raise NotConfigured("MAILER_FROM is not set: mail has no From address.",
                            fields={"MAILER_FROM": ["not set"]})
    return sender


@lru_cache(maxsize=64)
def _domain_of(sender: str) -> str:
    # Cached: a service has a sender or two, and parseaddr is slow beside the rest of a mail.
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


@lru_cache(maxsize=64)
def _list_host(base_url: str, sender: str) -> str:
    return urlsplit(base_url).hostname or _domain_of(sender)


def needs_unsubscribe(category: Category) -> bool:
    """Promotional and referral mail carry the one-click unsubscribe headers and footer."""
    return category in (Category.PROMOTIONAL, Category.REFERRAL)


def postal_address(config: Any = None) -> str:
    """MAILER_POSTAL_ADDRESS, or NotConfigured: CAN-SPAM requires it in commercial mail."""
    address = (current_app.config if config is None else config).get("MAILER_POSTAL_ADDRESS")
    if not address:
        raise NotConfigured(
            "MAILER_POSTAL_ADDRESS is not set: promotional mail must carry the sender's postal "
            "address (CAN-SPAM), so it is refused.",
            fields={"MAILER_POSTAL_ADDRESS": ["not set"]},
        )
    return address


def _with_footer(part: str, footer: str, html: bool, needles: tuple[str, ...]) -> str:
    if all(needle in part for needle in needles):
        return part
    if html:
        closing = list(_BODY_CLOSE.finditer(part))
        if closing:
            at = closing[-1].start()
            return part[:at] + footer + part[at:]
        return part + footer
    return part.rstrip("\n") + "\n" + footer


def compose(envelope: Envelope) -> OutgoingMail:
    """Render one mail for its recipient, with links, footer and headers as its category needs."""
    config = current_app.config
    base_url = config["MAILER_BASE_URL"]
    sender = sender_address(config)
    context: dict[str, Any] = dict(envelope.data)
    context["brand_name"] = config.get("MAILER_BRAND_NAME", "mailer")
    headers: list[tuple[str, str]] = []
    unsubscribe_url = None
    if needs_unsubscribe(envelope.category) or (envelope.test and envelope.topic is not None):
        topic_id = envelope.topic.id if envelope.topic else None
        token = unsubscribe_token(envelope.address_hash, topic_id, envelope.campaign_id)
        unsubscribe_url = f"{base_url}/unsubscribe/{token}"
        context["unsubscribe_url"] = unsubscribe_url
        context["preferences_url"] = (
            f"{base_url}/preferences/{preferences_token(envelope.address_hash)}"
        )
        context["postal_address"] = postal_address(config)
        context["topic_name"] = envelope.topic.name if envelope.topic else context["brand_name"]
        headers.append(("List-Unsubscribe", f"<{unsubscribe_url}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        list_slug = envelope.topic.slug if envelope.topic else envelope.category.value
        list_host = _list_host(base_url, sender)
        headers.append(("List-Id", f"<{list_slug}.{list_host}>"))

    templates = renderer()
    rendered: Rendered = templates.render(envelope.template, context)
    text, html = rendered.text, rendered.html
    if unsubscribe_url is not None:
        needles = (unsubscribe_url, context["postal_address"])
        footer = (REFERRAL_FOOTER_TEMPLATE if envelope.category is Category.REFERRAL
                  else FOOTER_TEMPLATE)
        footer_text = templates.part(footer, "body.txt", context) or ""
        text = _with_footer(text, footer_text, False, needles)
        if html is not None:
            footer_html = templates.part(footer, "body.html", context) or ""
            html_needles = (unsubscribe_url, str(escape(context["postal_address"])))
            html = _with_footer(html, footer_html, True, html_needles)
    return OutgoingMail(
        sender=sender,
        to=envelope.to_address,
        subject=(TEST_SUBJECT_PREFIX + rendered.subject) if envelope.test else rendered.subject,
        text=text,
        html=html,
        message_id=f"<{envelope.public_id}@{_domain_of(sender)}>",
        extra_headers=tuple(headers),
    )
