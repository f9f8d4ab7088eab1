"""The worker's database side: claim due messages under a lease, record outcomes, release.

PostgreSQL: several workers claim with `FOR UPDATE SKIP LOCKED`, so each row
goes to one worker. SQLite: the claim is one conditional UPDATE, and SQLite
runs one writer at a time, so two claims never take the same row. A row whose
lease ran out (its worker died) is claimable again.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, or_, select, text, update

from mailer.campaigns.models import Campaign, CampaignStatus
from mailer.consent.gate import Category
from mailer.consent.models import ConsentSource
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

# Literal, so PostgreSQL can match the partial index ix_messages_claimable.
_CLAIMABLE_SQL = text("messages.status IN ('queued', 'deferred', 'sending')")
MAX_BACKOFF = dt.timedelta(hours=6)
# A paused campaign's messages wait where they are: claims pass them by.
# Not held back by a paused campaign. Written as NOT IN (...) rather than NOT EXISTS: given
# the anti-join, PostgreSQL with statistics expects next to no row to pass and so reads and
# sorts every due row of the outbox for each claim (a 100,000-row outbox: 160 ms a batch)
# instead of walking ix_messages_claimable until the batch is full.
_NOT_PAUSED = or_(
    Message.campaign_id.is_(None),
    Message.campaign_id.not_in(
        select(Campaign.id).where(Campaign.status == CampaignStatus.PAUSED).scalar_subquery()
    ),
)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    public_id: str
    category: Category
    topic_id: int | None
    template: str
    data: dict[str, Any]
    to_address: str | None
    address_hash: str
    attempts: int
    campaign_id: int | None = None
    is_test: bool = False


def claim(owner: str, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due messages for `owner`, leased for `lease_seconds`; commits."""
    now = utcnow()
    due = (
        select(Message.id)
        .where(_CLAIMABLE_SQL, Message.due_at <= now, _NOT_PAUSED)
        .order_by(Message.due_at)
        .limit(limit)
    )
    if db.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    statement = (
        update(Message)
        .where(Message.id.in_(due.scalar_subquery()))
        .values(
            status=MessageStatus.SENDING,
            lease_owner=owner,
            due_at=now + dt.timedelta(seconds=lease_seconds),
            attempts=Message.attempts + 1,
            updated_at=now,
        )
        .returning(
            Message.id, Message.public_id, Message.category, Message.topic_id, Message.template,
            Message.data, Message.to_address, Message.address_hash, Message.attempts,
            Message.campaign_id, Message.is_test,
        )
        .execution_options(synchronize_session=False)
    )
    rows = db.session.execute(statement).all()
    db.session.commit()
    return sorted(
        (Claimed(r.id, r.public_id, Category(r.category), r.topic_id, r.template, r.data or {},
                 r.to_address, r.address_hash, r.attempts, r.campaign_id, bool(r.is_test))
         for r in rows),
        key=lambda c: c.id,
    )


def renew(owner: str, lease_seconds: float) -> int:
    """Extend the lease of everything `owner` holds; commits. Returns the rows renewed."""
    now = utcnow()
    result = db.session.execute(
        update(Message)
        .where(Message.lease_owner == owner, Message.status == MessageStatus.SENDING)
        .values(due_at=now + dt.timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount or 0


def backoff_delay(attempts: int, base_seconds: float) -> dt.timedelta:
    """Exponential backoff from `base_seconds`, capped at 6 hours, with ±20% jitter."""
    seconds = min(base_seconds * (2 ** max(attempts - 1, 0)), MAX_BACKOFF.total_seconds())
    return dt.timedelta(seconds=seconds * random.uniform(0.8, 1.2))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed message."""

    id: int
    status: MessageStatus  # SENT, DEFERRED, FAILED or SUPPRESSED
    category: Category
    address_hash: str
    attempts: int
    detail: str | None = None
    hard_bounce: bool = False


def record(owner: str, outcomes: Sequence[Outcome], base_backoff: float) -> None:
    """Write a batch of outcomes in a few statements; suppress hard bounces; commits.

    Only rows this owner still holds are written: if the lease was lost, the
    worker that took the row over owns its state.
    """
    if not outcomes:
        return
    now = utcnow()
    mine = (Message.lease_owner == owner) & (Message.status == MessageStatus.SENDING)
    sent = [o.id for o in outcomes if o.status is MessageStatus.SENT]
    if sent:
        db.session.execute(
            update(Message).where(Message.id.in_(sent), mine)
            .values(status=MessageStatus.SENT, sent_at=now, due_at=None, lease_owner=None,
                    last_error=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    # A referral's plaintext recipient and rendered data go once its mail is final: sent,
    # failed or suppressed alike (the friend's address is kept for nothing else).
    scrub = [o.id for o in outcomes if o.category is Category.REFERRAL and o.status in
             (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED)]
    if scrub:
        db.session.execute(
            update(Message).where(Message.id.in_(scrub))
            .values(to_address=None, data={})
            .execution_options(synchronize_session=False)
        )
    others = [o for o in outcomes if o.status is not MessageStatus.SENT]
    if others:
        params = []
        for o in others:
            due = now + backoff_delay(o.attempts, base_backoff) \
                if o.status is MessageStatus.DEFERRED else None
            params.append({"row_id": o.id, "new_status": o.status.value, "new_due": due,
                           "detail": (o.detail or "")[:1000] or None})
        statement = (
            update(Message.__table__)
            .where(Message.__table__.c.id == bindparam("row_id"),
                   Message.__table__.c.lease_owner == owner,
                   Message.__table__.c.status == MessageStatus.SENDING)
            .values(status=bindparam("new_status"), due_at=bindparam("new_due"),
                    last_error=bindparam("detail"), lease_owner=None, updated_at=now)
        )
        db.session.execute(statement, params)
    for o in outcomes:
        if o.hard_bounce:
            suppressions.suppress(o.address_hash, Reason.BOUNCED, source=ConsentSource.BOUNCE)
    db.session.commit()


def release(owner: str, ids: Sequence[int]) -> int:
    """Hand back claimed messages that were not attempted (shutdown); commits."""
    if not ids:
        return 0
    now = utcnow()
    result = db.session.execute(
        update(Message)
        .where(Message.id.in_(list(ids)), Message.lease_owner == owner,
               Message.status == MessageStatus.SENDING)
        .values(
            # The attempt never happened: it is handed back uncounted.
            status=case((Message.attempts > 1, MessageStatus.DEFERRED.value),
                        else_=MessageStatus.QUEUED.value),
            due_at=now, lease_owner=None, attempts=Message.attempts - 1, updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount or 0
