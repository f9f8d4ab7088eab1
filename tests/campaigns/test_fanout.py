"""Fan-out: who becomes an outbox row, exactly once, whatever batch sizes, crashes and resumes.

Runs against the real database of the suite (SQLite, or PostgreSQL with MAILER_TEST_DATABASE_URL):
the statement under test is SQL, so nothing here is mocked.
"""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from mailer import addresses
from mailer.campaigns import services as campaigns
from mailer.campaigns.fanout import fan_out_batch
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

NEWS = {"headline": "Winter sale", "intro": "Pianos half price."}


def subscribe(emails: list[str], topic: str = "news", **attributes) -> list[str]:
    for email in emails:
        contacts.upsert(email, topics=[topic], attributes=attributes or None)
    db.session.commit()
    return emails


def new_campaign(segment: dict | None = None, topic: str = "news") -> Campaign:
    campaign = campaigns.create("Winter", topic, "newsletter", NEWS, segment)
    campaigns.schedule(campaign, None)
    db.session.commit()
    return campaign


def fan_out(campaign: Campaign, batch: int) -> int:
    """Every batch in its own transaction, as the scheduler runs them; returns the batches."""
    batches = 0
    while True:
        batches += 1
        done = fan_out_batch(campaign, batch)
        db.session.commit()
        if done:
            return batches


def queued_to(campaign: Campaign) -> list[str]:
    return list(db.session.scalars(
        select(Message.to_address).where(Message.campaign_id == campaign.id)
    ))


def test_exactly_the_topics_subscribers_in_the_segment_without_a_refusing_mark(make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("other", double_opt_in=False)
    wanted = subscribe([f"de{i}@example.com" for i in range(12)], country="DE", vip=True)
    subscribe([f"fr{i}@example.com" for i in range(5)], country="FR", vip=True)
    subscribe([f"plain{i}@example.com" for i in range(3)], country="DE", vip=False)
    subscribe(["elsewhere@example.com"], topic="other", country="DE", vip=True)
    contacts.upsert("nosub@example.com", attributes={"country": "DE", "vip": True})
    marked = subscribe([f"{r.value}@example.com" for r in Reason if r is not Reason.UNSUBSCRIBED],
                       country="DE", vip=True)
    for email in marked:
        reason = Reason(email.split("@")[0])
        suppressions.suppress(addresses.hash_of(email), reason, source=ConsentSource.OPERATOR)
    left_topic, = subscribe(["left-topic@example.com"], country="DE", vip=True)
    contacts.update(contacts.get(left_topic), subscriptions={"news": "unsubscribed"})
    # A mark for another topic does not refuse this one.
    other_mark, = subscribe(["other-mark@example.com"], country="DE", vip=True)
    suppressions.suppress(addresses.hash_of(other_mark), Reason.UNSUBSCRIBED,
                          source=ConsentSource.OPERATOR,
                          topic_id=db.session.scalar(text("SELECT id FROM topics "
                                                          "WHERE slug = 'other'")))
    db.session.commit()

    campaign = new_campaign({"attributes": {"country": "DE", "vip": True}})
    fan_out(campaign, 7)

    assert sorted(queued_to(campaign)) == sorted([*wanted, other_mark])
    assert campaign.recipients == len(wanted) + 1
    assert campaign.fanout_done


def test_rows_are_queued_promotional_mail_of_the_campaign_with_unguessable_ids(make_topic):
    make_topic("news", double_opt_in=False)
    emails = subscribe([f"fan{i}@example.com" for i in range(20)])
    campaign = new_campaign()
    fan_out(campaign, 1000)

    rows = db.session.scalars(select(Message).where(Message.campaign_id == campaign.id)).all()
    assert sorted(r.to_address for r in rows) == sorted(emails)
    for row in rows:
        assert row.address_hash == addresses.hash_of(row.to_address)
        assert (row.category, row.status, row.topic_id, row.template, row.data, row.attempts,
                row.is_test) == ("promotional", MessageStatus.QUEUED, campaign.topic_id,
                                 "newsletter", {}, 0, False)
        assert row.due_at is not None
        assert re.fullmatch(r"[0-9a-f]{32}", row.public_id)
    # The batch's second, the row's place in address order (so the ids rise as the rows are
    # inserted), then 19 random digits: no two alike, none shared with another batch's.
    assert len({r.public_id[:8] for r in rows}) == 1
    in_address_order = sorted(rows, key=lambda r: r.address_hash)
    assert [int(r.public_id[8:13], 16) for r in in_address_order] == list(range(1, 21))
    random_parts = [r.public_id[13:] for r in rows]
    assert len(set(random_parts)) == len(rows)
    assert len({part[:4] for part in random_parts}) > 1

    second = new_campaign()
    fan_out(second, 1000)
    again = db.session.scalars(select(Message.public_id)
                               .where(Message.campaign_id == second.id)).all()
    assert len(again) == 20 and not {p[13:] for p in again} & set(random_parts)


def test_a_batch_is_a_range_of_contact_ids_and_the_cursor_moves_with_it(make_topic):
    make_topic("news", double_opt_in=False)
    subscribe([f"fan{i}@example.com" for i in range(10)])
    ids = list(db.session.scalars(text("SELECT id FROM contacts ORDER BY id")))
    campaign = new_campaign()
    campaign.fanout_cursor = ids[0] - 1
    db.session.commit()

    assert not fan_out_batch(campaign, 4)
    db.session.commit()
    assert campaign.fanout_cursor == ids[3]
    assert sorted(queued_to(campaign)) == [f"fan{i}@example.com" for i in range(4)]
    assert campaign.recipients == 4
    assert fan_out(campaign, 4) == 2
    assert len(queued_to(campaign)) == campaign.recipients == 10


def test_a_worker_dying_mid_batch_leaves_nothing_of_it_and_the_next_one_redoes_it(
    app, make_topic
):
    make_topic("news", double_opt_in=False)
    subscribe([f"fan{i}@example.com" for i in range(30)])
    campaign = new_campaign()
    campaign_id = campaign.id
    assert not fan_out_batch(campaign, 10)
    db.session.commit()
    committed = campaign.fanout_cursor

    # The second batch is written, then the worker dies before its commit.
    fan_out_batch(campaign, 10)
    db.session.rollback()
    db.session.remove()

    campaign = db.session.get(Campaign, campaign_id)
    assert campaign.fanout_cursor == committed
    assert len(queued_to(campaign)) == campaign.recipients == 10
    fan_out(campaign, 10)
    rows = queued_to(campaign)
    assert len(rows) == len(set(rows)) == campaign.recipients == 30


def test_a_cursor_set_back_over_queued_rows_queues_only_the_rest(make_topic):
    make_topic("news", double_opt_in=False)
    subscribe([f"fan{i}@example.com" for i in range(10)])
    campaign = new_campaign()
    fan_out(campaign, 5)
    subscribe([f"late{i}@example.com" for i in range(3)])  # ids after the cursor
    campaign.fanout_cursor = 0
    campaign.fanout_done = False
    db.session.commit()

    fan_out(campaign, 1000)
    rows = queued_to(campaign)
    assert len(rows) == len(set(rows)) == 13
    assert campaign.recipients == 13


def test_the_unique_constraint_refuses_a_second_row_for_an_address(make_topic):
    make_topic("news", double_opt_in=False)
    subscribe(["fan@example.com"])
    campaign = new_campaign()
    fan_out(campaign, 1000)
    row = db.session.scalar(select(Message).where(Message.campaign_id == campaign.id))
    columns = Message.__table__.c
    copy = {c.name: getattr(row, c.key) for c in columns if c.name != "id"}
    copy["public_id"] = "f" * 32
    with pytest.raises(IntegrityError), db.session.begin_nested():
        db.session.execute(Message.__table__.insert().values(**copy))
    db.session.rollback()


def test_two_workers_on_one_campaign_queue_each_address_once(app, make_topic):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("several workers run against PostgreSQL only (CONTRACT.md)")
    make_topic("news", double_opt_in=False)
    subscribe([f"fan{i}@example.com" for i in range(40)])
    campaign_id = new_campaign().id
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        with app.app_context():
            try:
                campaign = db.session.get(Campaign, campaign_id)
                start.wait()
                while not fan_out_batch(campaign, 3):
                    db.session.commit()
                db.session.commit()
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    db.session.remove()
    campaign = db.session.get(Campaign, campaign_id)
    rows = queued_to(campaign)
    assert len(rows) == len(set(rows)) == 40
    assert campaign.recipients == db.session.scalar(
        select(func.count()).select_from(Message).where(Message.campaign_id == campaign_id))
