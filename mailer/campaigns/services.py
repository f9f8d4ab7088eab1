"""Campaign life cycle: create, schedule, pause, resume, cancel, test send, counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, update

from mailer import addresses
from mailer.campaigns.models import UNFINISHED, Campaign, CampaignStatus
from mailer.database import utcnow
from mailer.errors import Conflict, NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.compose import Envelope, TopicInfo, compose
from mailer.messages.models import Category, Message, MessageStatus, TemplateCategory
from mailer.messages.services import (
    RecipientSuppressed,
    SendRequest,
    accept,
    new_public_id,
)
from mailer.messages.templates import CategoryMismatch, TemplateInfo
from mailer.topics.models import Topic

# Which transitions each action may make: draft → scheduled → running → paused ⇄ running →
# finished; cancelled from any unfinished state.
TRANSITIONS: dict[str, tuple[tuple[CampaignStatus, ...], CampaignStatus]] = {
    "schedule": ((CampaignStatus.DRAFT, CampaignStatus.SCHEDULED), CampaignStatus.SCHEDULED),
    "pause": ((CampaignStatus.RUNNING,), CampaignStatus.PAUSED),
    "resume": ((CampaignStatus.PAUSED,), CampaignStatus.RUNNING),
    "cancel": (UNFINISHED, CampaignStatus.CANCELLED),
}
SEGMENT_VALUE_TYPES = (str, int, float, bool)


class InvalidTransition(Conflict):
    code = "invalid_transition"


def check_segment(segment: Any) -> dict[str, Any]:
    """A segment is `{"attributes": {name: value}}` with text, number or boolean values."""
    if segment in (None, {}):
        return {}
    problems = []
    if not isinstance(segment, dict) or set(segment) - {"attributes"}:
        problems.append('A segment is {"attributes": {name: value, ...}}.')
    else:
        attributes = segment.get("attributes") or {}
        if not isinstance(attributes, dict):
            problems.append('"attributes" is an object.')
        else:
            for name, value in attributes.items():
                if not isinstance(value, SEGMENT_VALUE_TYPES) or not name or len(name) > 64:
                    problems.append(f"'{name}': values are text, numbers or true/false.")
    if problems:
        raise ValidationFailed(fields={"segment": problems})
    return segment


def _sample_envelope(campaign_topic: Topic, template: str, data: dict[str, Any],
                     to: str = "sample@example.com") -> Envelope:
    return Envelope(
        public_id=new_public_id(), to_address=to, address_hash=addresses.keyed_hash(to),
        category=Category.PROMOTIONAL, template=template, data=data,
        topic=TopicInfo(campaign_topic.id, campaign_topic.slug, campaign_topic.name),
    )


def campaign_template(name: str) -> TemplateInfo:
    """The template a campaign may send: a promotional one (422 category_mismatch else)."""
    info = templates.lookup(name, variables=False)
    if info.category is not TemplateCategory.PROMOTIONAL or info.service is not None:
        raise CategoryMismatch(
            f"Campaigns send promotional templates only; '{info.name}' is "
            f"{info.category.value}.",
            fields={"template": [f"{info.name} is {info.category.value}, not promotional"]},
            extra={"template_category": info.category.value},
        )
    return info


def create(name: str, topic_slug: str, template: str, data: dict[str, Any],
           segment: dict[str, Any] | None) -> Campaign:
    """A draft campaign of a promotional template; the template must render with the data
    now (422 otherwise). A console template's version is kept: the campaign sends the
    version it was created with, however the template is edited later."""
    topic = db.session.scalar(select(Topic).where(Topic.slug == topic_slug))
    if topic is None:
        raise ValidationFailed(f"Unknown topic: {topic_slug}",
                               fields={"topic": [f"Unknown topic: {topic_slug}"]})
    reference = campaign_template(template).reference
    compose(_sample_envelope(topic, reference, data))
    campaign = Campaign(public_id=new_public_id(), name=name, topic_id=topic.id, topic=topic,
                        template=reference, data=data, segment=check_segment(segment),
                        status=CampaignStatus.DRAFT, fanout_cursor=0, fanout_done=False,
                        recipients=0, unsubscribed=0)
    db.session.add(campaign)
    db.session.flush()
    return campaign


def get(public_id: str) -> Campaign:
    campaign = db.session.scalar(select(Campaign).where(Campaign.public_id == public_id))
    if campaign is None:
        raise NotFound("No campaign with that id.", code="campaign_not_found")
    return campaign


def list_campaigns(limit: int = 100) -> list[Campaign]:
    return list(db.session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit)))


def allowed_actions(campaign: Campaign) -> set[str]:
    """The actions of TRANSITIONS the campaign's status allows now."""
    return {action for action, (allowed, _target) in TRANSITIONS.items()
            if campaign.status in allowed}


def _move(campaign: Campaign, action: str) -> None:
    allowed, target = TRANSITIONS[action]
    if campaign.status not in allowed:
        raise InvalidTransition(
            f"A {campaign.status} campaign cannot {action}.",
            extra={"campaign_status": campaign.status},
        )
    campaign.status = target


def schedule(campaign: Campaign, send_at: dt.datetime | None) -> Campaign:
    """Schedule for `send_at` (aware; None or past = now). Rescheduling a scheduled one moves it."""
    if send_at is not None and send_at.tzinfo is None:
        raise ValidationFailed("send_at needs a time zone (e.g. 2026-12-01T09:00:00+01:00).",
                               fields={"send_at": ["needs a time zone offset"]})
    _move(campaign, "schedule")
    campaign.send_at = (send_at or utcnow()).astimezone(dt.UTC)
    db.session.flush()
    return campaign


def pause(campaign: Campaign) -> Campaign:
    """Stop new deliveries: workers skip the campaign's messages until it resumes."""
    _move(campaign, "pause")
    db.session.flush()
    return campaign


def resume(campaign: Campaign) -> Campaign:
    _move(campaign, "resume")
    db.session.flush()
    return campaign


def cancel(campaign: Campaign) -> Campaign:
    """Cancel; every message of the campaign not yet handed to SMTP is marked cancelled."""
    _move(campaign, "cancel")
    now = utcnow()
    db.session.execute(
        update(Message)
        .where(Message.campaign_id == campaign.id,
               Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]))
        .values(status=MessageStatus.CANCELLED, due_at=None, updated_at=now,
                last_error="campaign cancelled")
        .execution_options(synchronize_session=False)
    )
    campaign.finished_at = now
    db.session.flush()
    return campaign


def stats(campaign: Campaign) -> dict[str, int]:
    """Counts only: how many recipients, and how many messages in each status."""
    rows = db.session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign.id)
        .group_by(Message.status)
    ).all()
    counts = {status.value: 0 for status in MessageStatus}
    counts.update({status: count for status, count in rows})
    counts["recipients"] = campaign.recipients
    counts["unsubscribed"] = campaign.unsubscribed
    return counts


def send_test(campaign: Campaign, to: str, *, api_key_id: int | None = None) -> Message:
    """Queue one test mail of the campaign to `to`, marked "[TEST]".

    A test mail is marketing for the campaign's topic like the campaign itself, so the
    consent gate judges it as promotional mail of that topic (CONSENT.md: "sends and
    campaigns alike"): an address subscribed to the topic and without a mark gets it, and
    so does a test recipient (a console user, MAILER_TEST_RECIPIENTS; see
    campaigns.testing) without a mark. Nobody else: a test form must not be a way to send
    marketing to anyone, quarantined referral recipients included. It is rendered exactly as
    the campaign's mail, footer and links included, so what is checked is what subscribers
    will get.
    """
    try:
        return accept(
            SendRequest(to=to, template=campaign.template, data=campaign.data,
                        category=Category.PROMOTIONAL, topic=campaign.topic.slug, test=True),
            api_key_id=api_key_id,
        )
    except RecipientSuppressed as exc:
        reason = exc.extra.get("reason", "refused")
        raise RecipientSuppressed(
            reason,
            message=(f"Test mails are marketing for the topic {campaign.topic.name!r}: they go "
                     f"only to a console user's address, one listed in MAILER_TEST_RECIPIENTS, "
                     f"or an address subscribed to the topic, and never to a marked address; "
                     f"this one is refused ({reason})."),
        ) from exc


def render_preview(campaign: Campaign, data_override: dict[str, Any] | None = None):
    """The campaign as a sample recipient would get it (an OutgoingMail)."""
    return compose(_sample_envelope(campaign.topic, campaign.template,
                                    data_override if data_override is not None
                                    else campaign.data))
