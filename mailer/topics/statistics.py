"""Each topic's growth by week: new subscriptions and unsubscribes, counted from the consent
log in one grouped query. Aggregates only; nothing per person."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select

from mailer.consent.models import ConsentEvent, ConsentSubject, SubscriptionState
from mailer.database import epoch_seconds, utcnow
from mailer.extensions import db
from mailer.topics.models import Topic

WEEK = 7 * 86400
# 1970-01-01 was a Thursday: shifting by three days makes every week start on a Monday.
MONDAY_SHIFT = 3 * 86400


@dataclass
class WeeklyGrowth:
    name: str
    slug: str
    weeks: list[dt.date] = field(default_factory=list)  # each week's Monday
    subscribed: list[int] = field(default_factory=list)
    unsubscribed: list[int] = field(default_factory=list)


def weekly_growth(weeks: int = 12, now: dt.datetime | None = None) -> list[WeeklyGrowth]:
    """For every topic, the last `weeks` weeks (this one included): subscriptions that began
    (a consent event to `subscribed`) and ended (to `unsubscribed`) in each."""
    now = now or utcnow()
    this_week = (int(now.timestamp()) + MONDAY_SHIFT) // WEEK
    first_week = this_week - weeks + 1
    since = dt.datetime.fromtimestamp(first_week * WEEK - MONDAY_SHIFT, dt.UTC)
    dialect = db.session.get_bind().dialect.name
    week = (epoch_seconds(ConsentEvent.created_at, dialect) + MONDAY_SHIFT) // WEEK
    rows = db.session.execute(
        select(ConsentEvent.topic_id, ConsentEvent.state, week.label("week"), func.count())
        .where(ConsentEvent.subject == ConsentSubject.TOPIC.value,
               ConsentEvent.state.in_([SubscriptionState.SUBSCRIBED.value,
                                       SubscriptionState.UNSUBSCRIBED.value]),
               ConsentEvent.created_at >= since)
        .group_by(ConsentEvent.topic_id, ConsentEvent.state, "week")
    ).all()
    mondays = [dt.date(1970, 1, 1) + dt.timedelta(seconds=(first_week + i) * WEEK
                                                       - MONDAY_SHIFT) for i in range(weeks)]
    growth = {topic.id: WeeklyGrowth(topic.name, topic.slug, mondays, [0] * weeks, [0] * weeks)
              for topic in db.session.scalars(select(Topic).order_by(Topic.name))}
    for topic_id, state, index, n in rows:
        position = int(index) - first_week
        if topic_id not in growth or not 0 <= position < weeks:
            continue
        target = growth[topic_id].subscribed if state == SubscriptionState.SUBSCRIBED \
            else growth[topic_id].unsubscribed
        target[position] += n
    return list(growth.values())
