"""Statistics: aggregate counts drawn as server-rendered SVG; nothing per person."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import update

from mailer.campaigns import scheduler
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.topics.statistics import weekly_growth
from tests.admin.sections import fresh, marketer_console, post, text
from tests.admin.test_console import draft


@pytest.fixture
def console(client):
    return marketer_console(client)


def test_topic_growth_by_week_counts_joins_and_leaves(console, make_topic):
    make_topic("news", double_opt_in=False)
    for i in range(3):
        contacts.upsert(f"fan{i}@example.com", topics=["news"])
    contacts.update(contacts.get("fan0@example.com"), subscriptions={"news": "unsubscribed"})
    db.session.commit()
    (news,) = weekly_growth(4)
    assert news.subscribed[-1] == 3 and news.unsubscribed[-1] == 1
    assert sum(news.subscribed[:-1]) == 0
    assert news.weeks[-1].weekday() == 0 and news.weeks[-1] <= dt.date.today()

    page = text(console.get("/admin/statistics"))
    assert page.count('<svg class="chart"') == 1 and "<title>News: subscriptions by week" in page
    assert "cdn" not in page.lower() and "<script" not in page
    assert "@example.com" not in page


def test_a_campaigns_chart_counts_its_outcomes_over_time(console, make_topic):
    make_topic("news", double_opt_in=False)
    for i in range(4):
        contacts.upsert(f"fan{i}@example.com", topics=["news"])
    db.session.commit()
    campaign = draft()
    assert "Nothing sent yet" in text(console.get(f"/admin/campaigns/{campaign}/statistics"))
    post(console, f"/admin/campaigns/{campaign}/send-now", form_page="/admin/")
    scheduler.tick("test")
    now = dt.datetime.now(dt.UTC)
    ids = sorted(db.session.scalars(Message.__table__.select().with_only_columns(Message.id)))
    db.session.execute(update(Message).where(Message.id.in_(ids[:2])).values(
        status="sent", sent_at=now - dt.timedelta(hours=2)))
    db.session.execute(update(Message).where(Message.id == ids[2]).values(
        status="sent", sent_at=now))
    db.session.execute(update(Message).where(Message.id == ids[3]).values(
        status="failed", updated_at=now))
    db.session.commit()
    fresh()
    page = text(console.get(f"/admin/campaigns/{campaign}/statistics"))
    assert '<svg class="chart"' in page and "<polyline" in page
    rows = re.findall(r'<tr><td>[^<]+</td><td class="num">(\d+)</td><td class="num">(\d+)</td>',
                      page)
    assert rows[0] == ("2", "0") and rows[-1] == ("3", "1")  # cumulative: sent, failed
    assert "fan0@example.com" not in page
