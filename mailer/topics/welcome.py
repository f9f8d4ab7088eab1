"""A topic's welcome mail: a promotional template the topic names, mailed once when an address's
subscription to it is confirmed (its double opt-in confirmation, or a single opt-in subscribe).

It is marketing for the topic, so it goes through `messages.services.accept` as promotional
mail of that topic: the consent gate judges it as any campaign mail (the address is subscribed
by then, and a mark still refuses it), and it carries the unsubscribe footer and headers. It is
queued in the transaction that subscribes, so a subscription that is rolled back sends nothing.
A subscription becomes `subscribed` once per confirmation (a second confirm, or asking again
while subscribed, changes nothing), so the mail goes once; an address that leaves and later
confirms again is welcomed again. Imports welcome nobody: they subscribe people who joined
elsewhere, perhaps long ago.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from mailer import addresses
from mailer.errors import MailerError, ValidationFailed
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.compose import Envelope, TopicInfo, compose
from mailer.messages.models import Category, TemplateCategory
from mailer.messages.templates import TemplateProblem
from mailer.topics.models import Topic

log = logging.getLogger(__name__)
FIELD = "welcome_template"


def check_welcome_template(name: str | None, field: str = FIELD) -> str | None:
    """The template name a topic may name for its welcome mail: None or "" for none, else a
    promotional template (not one of the service's own mails) that renders with no data of
    its own (a welcome mail has nobody to fill its variables: it may use what the service
    gives, topic_name, brand_name and the links). Raises ValidationFailed (422) naming
    `field` otherwise."""
    name = (name or "").strip()
    if not name:
        return None
    try:
        info = templates.lookup(name, variables=False)
    except TemplateProblem as exc:
        raise ValidationFailed(str(exc.message), fields={field: [f"No template {name}."]}) from exc
    if info.category is not TemplateCategory.PROMOTIONAL or info.service is not None:
        problem = (f"A welcome mail is marketing for the topic: '{name}' is "
                   f"{info.category.value}, not promotional.")
        raise ValidationFailed(problem, fields={field: [problem]})
    sample = "sample@example.com"
    try:
        compose(Envelope(public_id=uuid.uuid4().hex, to_address=sample,
                         address_hash=addresses.keyed_hash(sample), category=Category.PROMOTIONAL,
                         template=info.reference, data={},
                         topic=TopicInfo(0, "sample", "Sample topic")))
    except TemplateProblem as exc:
        problem = (f"'{name}' needs data of its own ({exc.message}); a welcome mail may use "
                   f"only topic_name, brand_name and the links the service adds.")
        raise ValidationFailed(problem, fields={field: [problem]}) from exc
    return name


def send_welcomes(email: str, topics: Iterable[Topic]) -> int:
    """Queue the welcome mail of each of `topics` (those naming one) to `email`, just
    subscribed to them; returns how many were queued. A mail the gate refuses, or a
    template that no longer renders, is skipped and logged by topic id: the subscription
    stands either way."""
    from mailer.messages.services import SendRequest, accept

    queued = 0
    for topic in topics:
        if not topic.welcome_template:
            continue
        try:
            with db.session.begin_nested():
                accept(SendRequest(to=email, template=topic.welcome_template, data={},
                                   category=Category.PROMOTIONAL, topic=topic.slug))
            queued += 1
        except MailerError as exc:
            log.warning("welcome mail of topic %s not queued: %s", topic.id,
                        getattr(exc, "code", type(exc).__name__))
    return queued
