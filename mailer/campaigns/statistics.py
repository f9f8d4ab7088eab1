"""A campaign's outcomes over time: counts of its messages by final status per time bucket.

Aggregates only: the query groups in the database and no row names a person.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select

from mailer.campaigns.models import Campaign
from mailer.database import epoch_seconds
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus

# The outcomes a chart shows, each timed by when the message reached it.
OUTCOMES = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED)
MAX_BUCKETS = 48
BUCKET_SIZES = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)  # seconds


@dataclass
class Timeline:
    """Cumulative counts per outcome at the end of each bucket, from `start` on."""

    start: dt.datetime | None
    bucket_seconds: int
    cumulative: dict[str, list[int]] = field(default_factory=dict)
    unsubscribed: int = 0  # a counter without times: shown as a total

    @property
    def buckets(self) -> int:
        return len(next(iter(self.cumulative.values()), []))


def timeline(campaign: Campaign) -> Timeline:
    """Sent, failed and suppressed messages of the campaign over time (cumulative), in at most
    MAX_BUCKETS buckets of a size that spans its whole sending; two grouped queries."""
    when = func.coalesce(Message.sent_at, Message.updated_at)
    mine = (Message.campaign_id == campaign.id,
            Message.status.in_([status.value for status in OUTCOMES]))
    first, last = db.session.execute(select(func.min(when), func.max(when)).where(*mine)).one()
    result = Timeline(None, BUCKET_SIZES[0], {status.value: [] for status in OUTCOMES},
                      campaign.unsubscribed)
    if first is None:
        return result
    first, last = _aware(first), _aware(last)
    span = max(1.0, (last - first).total_seconds())
    size = next((s for s in BUCKET_SIZES if span / s <= MAX_BUCKETS), BUCKET_SIZES[-1])
    start = dt.datetime.fromtimestamp(int(first.timestamp()) // size * size, dt.UTC)
    dialect = db.session.get_bind().dialect.name
    bucket = (epoch_seconds(when, dialect) - int(start.timestamp())) // size
    rows = db.session.execute(
        select(Message.status, bucket.label("bucket"), func.count())
        .where(*mine).group_by(Message.status, "bucket")
    ).all()
    count = int(span // size) + 1
    per_bucket = {status.value: [0] * (count + 1) for status in OUTCOMES}
    for status, index, n in rows:
        position = min(max(int(index), 0), count)
        per_bucket[status][position] += n
    for status, values in per_bucket.items():
        running, cumulative = 0, []
        for n in values:
            running += n
            cumulative.append(running)
        result.cumulative[status] = cumulative
    result.start, result.bucket_seconds = start, size
    return result


def _aware(moment: dt.datetime) -> dt.datetime:
    # Aggregates skip the column type: SQLite answers a naive UTC time (or its text).
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
