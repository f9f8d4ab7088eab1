"""Turning claimed outbox rows into mail bytes, after the consent gate's second look.

Two steps: screen() reads what the mails depend on (campaign state, the consent gate, topics)
and needs the database, so the worker runs it in its database thread; build_one() renders and
builds one mail and needs no database, so the worker runs it on its event loop, one mail at a
time between SMTP replies (rendering in the database thread made the two threads take turns at
the interpreter lock, and the SMTP connections wait for each turn). prepare() is both steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from flask import current_app
from sqlalchemy import select

from mailer.campaigns.models import Campaign, CampaignStatus
from mailer.campaigns.testing import test_recipient_hashes
from mailer.consent import gate
from mailer.consent.gate import Request, Stage
from mailer.delivery import outbox
from mailer.delivery.outbox import Claimed, Outcome
from mailer.errors import MailerError
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.compose import Envelope, TopicInfo, compose
from mailer.messages.dkim import DkimSigner
from mailer.messages.mime import InvalidMail, build
from mailer.messages.models import MessageStatus
from mailer.topics.models import Topic


@dataclass(frozen=True, slots=True)
class Prepared:
    claimed: Claimed
    mail_from: str
    recipient: str
    message: bytes


@dataclass(frozen=True, slots=True)
class Pending:
    """A mail the consent gate allowed, with all it needs to be built."""

    claimed: Claimed
    envelope: Envelope
    mail_from: str


def _topics(ids: set[int]) -> dict[int, TopicInfo]:
    if not ids:
        return {}
    rows = db.session.execute(select(Topic.id, Topic.slug, Topic.name).where(Topic.id.in_(ids)))
    return {r.id: TopicInfo(r.id, r.slug, r.name) for r in rows}


def _signer() -> DkimSigner | None:
    return current_app.extensions.get("mailer.dkim")


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    status: str
    data: dict[str, Any]


def _campaigns(ids: set[int]) -> dict[int, CampaignInfo]:
    if not ids:
        return {}
    rows = db.session.execute(
        select(Campaign.id, Campaign.status, Campaign.data).where(Campaign.id.in_(ids))
    )
    return {r.id: CampaignInfo(r.status, r.data or {}) for r in rows}


def screen(batch: Sequence[Claimed], max_attempts: int,
           owner: str = "") -> tuple[list[Pending], list[Outcome]]:
    """Check consent again for the whole batch, and read what its mails need (database work).

    Returns the mails to build and the outcomes already known (suppressed by the gate,
    failed for good, cancelled with their campaign).
    """
    done: list[Outcome] = []
    candidates: list[Claimed] = []
    campaigns = _campaigns({c.campaign_id for c in batch if c.campaign_id is not None})
    paused: list[int] = []
    for claimed in batch:
        campaign = campaigns.get(claimed.campaign_id) if claimed.campaign_id else None
        if campaign is not None and campaign.status == CampaignStatus.PAUSED:
            paused.append(claimed.id)  # paused after the claim: hand it back untouched
        elif campaign is not None and campaign.status == CampaignStatus.CANCELLED:
            done.append(_final(claimed, MessageStatus.CANCELLED, "campaign cancelled"))
        elif claimed.attempts > max_attempts:
            done.append(_final(claimed, MessageStatus.FAILED,
                               f"gave up after {max_attempts} attempts"))
        elif claimed.to_address is None:
            done.append(_final(claimed, MessageStatus.FAILED, "recipient erased before delivery"))
        else:
            candidates.append(claimed)
    if paused:
        outbox.release(owner, paused)
    # Test mails are few: the test recipients' hashes are read only for a batch holding one.
    testers = test_recipient_hashes() if any(c.is_test for c in candidates) else set()
    decisions = gate.check_many(
        [Request(c.address_hash, c.category, c.topic_id,
                 test_recipient=c.is_test and c.address_hash in testers) for c in candidates],
        stage=Stage.DELIVERY,
    )
    topics = _topics({c.topic_id for c in candidates if c.topic_id is not None})
    # Console templates' versions compiled here, so build_one() renders without the database.
    templates.preload({c.template for c in candidates})
    mail_from = parseaddr(current_app.config.get("MAILER_FROM") or "")[1]
    pending: list[Pending] = []
    for claimed, decision in zip(candidates, decisions, strict=True):
        if not decision.allowed:
            done.append(_final(claimed, MessageStatus.SUPPRESSED, decision.reason))
            continue
        pending.append(Pending(claimed, Envelope(
            public_id=claimed.public_id, to_address=claimed.to_address or "",
            address_hash=claimed.address_hash, category=claimed.category,
            template=claimed.template,
            data=campaigns[claimed.campaign_id].data if claimed.campaign_id else claimed.data,
            topic=topics.get(claimed.topic_id) if claimed.topic_id else None,
            campaign_id=claimed.campaign_id, test=claimed.is_test,
        ), mail_from))
    return pending, done


def build_one(pending: Pending) -> Prepared | Outcome:
    """Render and build one mail (signed when DKIM is configured); no database work.

    Needs the app context (settings, templates, signing keys).
    """
    claimed = pending.claimed
    try:
        message = build(compose(pending.envelope))
        signer = _signer()
        if signer is not None:
            message = signer.sign(message)
    except (MailerError, InvalidMail) as exc:
        # Accept rendered this mail already; failing now means a template or a
        # setting changed since. Record why rather than retry forever.
        return _final(claimed, MessageStatus.FAILED, f"cannot build the mail: {exc}")
    return Prepared(claimed, pending.mail_from, claimed.to_address or "", message)


def prepare(batch: Sequence[Claimed], max_attempts: int,
            owner: str = "") -> tuple[list[Prepared], list[Outcome]]:
    """screen() the batch, then build_one() each mail: the mails to send, and the outcomes
    already known."""
    pending, done = screen(batch, max_attempts, owner)
    ready: list[Prepared] = []
    for item in pending:
        result = build_one(item)
        if isinstance(result, Prepared):
            ready.append(result)
        else:
            done.append(result)
    return ready, done


def _final(claimed: Claimed, status: MessageStatus, detail: str | None) -> Outcome:
    return Outcome(claimed.id, status, claimed.category, claimed.address_hash,
                   claimed.attempts, detail)
