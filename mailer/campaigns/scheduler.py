"""The campaign scheduler, run by every `mailer worker`: exactly one worker fans out a due
campaign (it holds a lease on it), and campaigns whose mail is all out are finished."""

from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import exists, or_, select, update

from mailer.campaigns.fanout import fan_out_batch
from mailer.campaigns.models import Campaign, CampaignStatus
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus

log = logging.getLogger(__name__)
# Contact ids per INSERT ... SELECT. 50,000 to 200,000 fan out equally fast (bench/README.md);
# 100,000 keeps a batch (and its lock on the campaign's row) near a second.
FANOUT_BATCH = 100_000
LEASE = dt.timedelta(seconds=60)


def take_due(owner: str) -> Campaign | None:
    """Lease one campaign that needs fanning out (due and scheduled, or left half done by a
    worker whose lease ran out); a scheduled one becomes running. Commits."""
    now = utcnow()
    candidate = (
        select(Campaign.id)
        .where(
            Campaign.fanout_done.is_(False),
            or_(
                (Campaign.status == CampaignStatus.SCHEDULED) & (Campaign.send_at <= now),
                Campaign.status.in_([CampaignStatus.RUNNING, CampaignStatus.PAUSED])
                & (Campaign.fanout_lease_until.is_(None) | (Campaign.fanout_lease_until < now)
                   | (Campaign.fanout_owner == owner)),
            ),
        )
        .order_by(Campaign.id)
        .limit(1)
    )
    if db.engine.dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True)
    campaign_id = db.session.scalar(candidate)
    if campaign_id is None:
        db.session.commit()
        return None
    campaign = db.session.get(Campaign, campaign_id)
    if campaign.status == CampaignStatus.SCHEDULED:
        campaign.status = CampaignStatus.RUNNING
        campaign.started_at = now
        log.info("campaign %s started", campaign.public_id)
    campaign.fanout_owner = owner
    campaign.fanout_lease_until = now + LEASE
    db.session.commit()
    return campaign


def finish_done() -> int:
    """Mark running campaigns finished once fanned out and nothing of theirs is left to send."""
    now = utcnow()
    pending = exists().where(
        Message.campaign_id == Campaign.id,
        Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING]),
    )
    result = db.session.execute(
        update(Campaign)
        .where(Campaign.status == CampaignStatus.RUNNING, Campaign.fanout_done.is_(True),
               ~pending)
        .values(status=CampaignStatus.FINISHED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount or 0


def paused_ids() -> set[int]:
    """Ids of the campaigns paused right now."""
    return set(db.session.scalars(
        select(Campaign.id).where(Campaign.status == CampaignStatus.PAUSED)
    ))


def tick(owner: str, budget_seconds: float = 2.0) -> set[int]:
    """One round: fan out a due campaign for up to `budget_seconds`, then finish what is done.
    Returns the ids of paused campaigns, whose mail the worker must hold back.

    Each batch commits with its cursor, so a worker that dies mid-way loses nothing.
    """
    campaign = take_due(owner)
    if campaign is not None:
        started = time.monotonic()
        while time.monotonic() - started < budget_seconds:
            done = fan_out_batch(campaign, FANOUT_BATCH)
            campaign.fanout_lease_until = utcnow() + LEASE
            db.session.commit()
            if done:
                log.info("campaign %s fanned out: %d recipients", campaign.public_id,
                         campaign.recipients)
                break
    finish_done()
    return paused_ids()
