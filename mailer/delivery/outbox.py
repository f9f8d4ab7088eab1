"""The worker's database side: claim due messages under a lease, record outcomes, release.

PostgreSQL: several workers claim with `FOR UPDATE SKIP LOCKED`, so each row
goes to one worker. SQLite: the claim is one conditional UPDATE, and SQLite
runs one writer at a time, so two claims never take the same row. A row whose
lease ran out (its worker died) is claimable again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, any_, bindparam, case, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from mailer.campaigns.models import Campaign, CampaignStatus
from mailer.consent.models import ConsentSource
from mailer.database import truncate_sqlite_wal, utcnow
from mailer.extensions import db
from mailer.messages.models import Category, Message, MessageStatus
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.webhooks import services as webhooks

# Literal, so PostgreSQL can match the partial index ix_messages_claimable.
_CLAIMABLE_SQL = text("messages.status IN ('queued', 'deferred', 'sending')")
MAX_BACKOFF = dt.timedelta(hours=6)
_campaigns = Campaign.__table__.c  # Core columns, as in every statement: see _messages
# A paused campaign's messages wait where they are: claims pass them by.
# Not held back by a paused campaign. Written as NOT IN (...) rather than NOT EXISTS: given
# the anti-join, PostgreSQL with statistics expects next to no row to pass and so reads and
# sorts every due row of the outbox for each claim (a 100,000-row outbox: 160 ms a batch)
# instead of walking ix_messages_claimable until the batch is full.
_NOT_PAUSED = or_(
    Message.__table__.c.campaign_id.is_(None),
    Message.__table__.c.campaign_id.not_in(
        select(_campaigns.id).where(_campaigns.status == CampaignStatus.PAUSED.value)
        .scalar_subquery()
    ),
)


# Statements run on Core columns, not the ORM entity: the ORM's bulk-update machinery (compile
# state, session synchronisation) cost more Python time per batch than the database took to
# run the statement, time the delivery worker's database thread spent holding the interpreter
# lock its event loop needed for SMTP.
_messages = Message.__table__
_m = _messages.c
# How many ids one statement takes at most (SQLite's bound-parameter limit is 32,766).
_ID_CHUNK = 5_000


def _is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def _id_in(postgres: bool) -> ColumnElement[bool]:
    """`messages.id` is one of the bound list `ids`.

    PostgreSQL gets `id = ANY(%(ids)s)`, one array parameter: an expanded IN list of a few
    hundred ids is rendered into the SQL by SQLAlchemy for every batch and, at over 50
    parameters, parsed again by psycopg for every batch (it caches no such statement); as one
    array the statement's text never changes. SQLite has no arrays: an expanded IN list.
    """
    if postgres:
        return _m.id == any_(bindparam("ids", type_=ARRAY(Integer)))
    return _m.id.in_(bindparam("ids", expanding=True))


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    listed = list(ids)
    for start in range(0, len(listed), _ID_CHUNK):
        yield listed[start:start + _ID_CHUNK]


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
        select(_m.id)
        .where(_CLAIMABLE_SQL, _m.due_at <= now, _NOT_PAUSED)
        .order_by(_m.due_at)
        .limit(limit)
    )
    if _is_postgres():
        due = due.with_for_update(skip_locked=True)
    statement = (
        update(_messages)
        .where(_m.id.in_(due.scalar_subquery()))
        .values(
            status=MessageStatus.SENDING.value,
            lease_owner=owner,
            due_at=now + dt.timedelta(seconds=lease_seconds),
            attempts=_m.attempts + 1,
            updated_at=now,
        )
        .returning(
            _m.id, _m.public_id, _m.category, _m.topic_id, _m.template, _m.data,
            _m.to_address, _m.address_hash, _m.attempts, _m.campaign_id, _m.is_test,
        )
    )
    rows = db.session.execute(statement).all()
    db.session.commit()
    return sorted(
        (Claimed(r.id, r.public_id, Category(r.category), r.topic_id, r.template, r.data or {},
                 r.to_address, r.address_hash, r.attempts, r.campaign_id, bool(r.is_test))
         for r in rows),
        key=lambda c: c.id,
    )


@functools.cache
def _renew_statement(postgres: bool) -> Any:
    return (
        update(_messages)
        .where(_id_in(postgres), _m.lease_owner == bindparam("owner"),
               _m.status == MessageStatus.SENDING.value)
        .values(due_at=bindparam("until", type_=_m.due_at.type))
    )


def renew(owner: str, lease_seconds: float, ids: Iterable[int]) -> int:
    """Extend the lease of the rows `ids` that `owner` still holds; commits. Returns the rows
    renewed.

    The worker passes what it claimed and has not recorded yet, found by primary key:
    looking held rows up by owner instead is served by no index, a scan of the whole outbox
    (25 ms of PostgreSQL's time at 100,000 rows, ten times that of the worker's database
    thread on a busy machine) during which the worker's next claim waits.
    """
    until = utcnow() + dt.timedelta(seconds=lease_seconds)
    statement = _renew_statement(_is_postgres())
    renewed = 0
    for chunk in _chunks(ids):
        result = db.session.execute(statement, {"ids": chunk, "owner": owner, "until": until})
        renewed += result.rowcount or 0
    db.session.commit()
    return renewed


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


@functools.cache
def _record_statements(postgres: bool) -> tuple[Any, Any, Any]:
    """(sent, scrub, other): the statements of record(), built once per dialect."""
    mine = (_m.lease_owner == bindparam("owner")) & (_m.status == MessageStatus.SENDING.value)
    now = bindparam("now", type_=_m.updated_at.type)
    sent = (
        update(_messages).where(_id_in(postgres), mine)
        .values(status=MessageStatus.SENT.value, sent_at=now, due_at=None, lease_owner=None,
                last_error=None, updated_at=now)
    )
    scrub = update(_messages).where(_id_in(postgres)).values(to_address=None, data={})
    other = (
        update(_messages)
        .where(_m.id == bindparam("row_id"), _m.lease_owner == bindparam("owner"),
               _m.status == MessageStatus.SENDING.value)
        .values(status=bindparam("new_status"), due_at=bindparam("new_due", type_=_m.due_at.type),
                last_error=bindparam("detail"), lease_owner=None, updated_at=now)
    )
    return sent, scrub, other


def _give_up_if_spent(outcome: Outcome, max_attempts: int | None) -> Outcome:
    """A deferral on the last allowed attempt is the final failure, and keeps its reply."""
    if (max_attempts is None or outcome.status is not MessageStatus.DEFERRED
            or outcome.attempts < max_attempts):
        return outcome
    return dataclasses.replace(
        outcome, status=MessageStatus.FAILED,
        detail=f"gave up after {max_attempts} attempts; last: {outcome.detail or 'no reply'}",
    )


# Set when a referral recipient was scrubbed but SQLite's log could not be emptied yet.
_wal_truncate_owed = False


def settle_scrubs() -> None:
    """Empty SQLite's write-ahead log if a scrub left older page copies in it (see
    database.truncate_sqlite_wal); retried on the next call while readers hold it up."""
    global _wal_truncate_owed
    if _wal_truncate_owed:
        _wal_truncate_owed = not truncate_sqlite_wal(db.engine)


def record(owner: str, outcomes: Sequence[Outcome], base_backoff: float,
           max_attempts: int | None = None) -> None:
    """Write a batch of outcomes in a few statements; suppress hard bounces; commits.

    Only rows this owner still holds are written: if the lease was lost, the
    worker that took the row over owns its state. With `max_attempts`, a deferral on
    the last attempt is recorded as the failure it is, with the server's last reply.
    """
    global _wal_truncate_owed
    if not outcomes:
        return
    outcomes = [_give_up_if_spent(o, max_attempts) for o in outcomes]
    now = utcnow()
    sent_statement, scrub_statement, other_statement = _record_statements(_is_postgres())
    sent = [o.id for o in outcomes if o.status is MessageStatus.SENT]
    for chunk in _chunks(sent):
        db.session.execute(sent_statement, {"ids": chunk, "owner": owner, "now": now})
    # A referral's plaintext recipient and rendered data go once its mail is final: sent,
    # failed or suppressed alike (the friend's address is kept for nothing else).
    scrub = [o.id for o in outcomes if o.category is Category.REFERRAL and o.status in
             (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED)]
    for chunk in _chunks(scrub):
        db.session.execute(scrub_statement, {"ids": chunk})
    others = [o for o in outcomes if o.status is not MessageStatus.SENT]
    if others:
        params = []
        for o in others:
            due = now + backoff_delay(o.attempts, base_backoff) \
                if o.status is MessageStatus.DEFERRED else None
            params.append({"row_id": o.id, "new_status": o.status.value, "new_due": due,
                           "detail": (o.detail or "")[:1000] or None, "owner": owner,
                           "now": now})
        db.session.execute(other_statement, params)
    for o in outcomes:
        if o.hard_bounce:
            # A Tell-a-Friend recipient's bounce is announced to no webhook.
            suppressions.suppress(o.address_hash, Reason.BOUNCED, source=ConsentSource.BOUNCE,
                                  announce=o.category is not Category.REFERRAL)
    webhooks.messages_finished(outcomes)
    db.session.commit()
    if scrub:
        _wal_truncate_owed = True
    settle_scrubs()


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
