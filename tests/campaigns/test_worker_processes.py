"""Campaigns sent by real `mailer worker` processes: killed mid-fan-out and mid-delivery and
restarted, and two at once on PostgreSQL. Nobody is missed; nobody gets a second copy, apart
from the documented in-flight window of a killed worker."""

from __future__ import annotations

import collections
import signal
import time

import pytest
from sqlalchemy import func, insert, select, update

from mailer import addresses
from mailer.campaigns import scheduler
from mailer.campaigns.models import Campaign
from mailer.consent.models import Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.topics.models import Topic
from tests.campaigns import start_campaign
from tests.processes import spawn_flask
from tests.smtp_server import ScriptedSmtpServer

pytestmark = pytest.mark.slow
BATCH = 20  # MAILER_WORKER_BATCH: a killed worker holds at most a few batches
# Contact ids this far apart put three recipients in each fan-out batch (scheduler.FANOUT_BATCH
# contact ids), so a fan-out of some hundreds takes hundreds of committed batches (seconds)
# and a kill lands in the middle of it even on a busy machine. Capped to stay within a 32-bit
# id.
SPACING = max(1, min(scheduler.FANOUT_BATCH // 3, 1_000_000))


def add_subscribers(count: int, prefix: str) -> list[str]:
    """`count` subscribers of the topic `news`, loaded in bulk with ids SPACING apart."""
    topic_id = db.session.scalar(select(Topic.id).where(Topic.slug == "news"))
    now = utcnow()
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    contacts = [{"id": (i + 1) * SPACING, "email": email,
                 "address_hash": addresses.keyed_hash(email), "attributes": {},
                 "source": "test", "partner_sharing": False, "created_at": now, "updated_at": now}
                for i, email in enumerate(emails)]
    db.session.execute(insert(Contact.__table__), contacts)
    db.session.execute(insert(Subscription.__table__), [
        {"contact_id": row["id"], "topic_id": topic_id, "state": SubscriptionState.SUBSCRIBED,
         "created_at": now, "updated_at": now} for row in contacts
    ])
    db.session.commit()
    return emails


def campaign(public_id: str) -> Campaign:
    db.session.remove()
    return db.session.scalar(select(Campaign).where(Campaign.public_id == public_id))


def worker(app, smtp: ScriptedSmtpServer):
    return spawn_flask(app, "mailer", "worker", MAILER_SMTP_URL=smtp.url,
                       MAILER_WORKER_LEASE="2", MAILER_WORKER_BATCH=str(BATCH),
                       MAILER_SMTP_CONNECTIONS="4", MAILER_RETRY_BACKOFF="0.2",
                       MAILER_LOG_LEVEL="WARNING")


def kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    process.stdout.close()


def stop(process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    if process.stdout and not process.stdout.closed:
        process.stdout.close()


def wait_for(condition, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def expire_fanout_lease(public_id: str) -> None:
    """Another worker takes a dead one's fan-out over once its lease (60 s) runs out; the test
    does not wait that long: the lease is made to have run out now."""
    db.session.execute(update(Campaign).where(Campaign.public_id == public_id)
                       .values(fanout_lease_until=utcnow()))
    db.session.commit()


def messages_of(public_id: str) -> dict[str, int]:
    """The campaign's outbox rows by status."""
    db.session.remove()
    rows = db.session.execute(
        select(Message.status, func.count()).join(Campaign, Campaign.id == Message.campaign_id)
        .where(Campaign.public_id == public_id).group_by(Message.status)
    )
    return dict(rows.all())


def test_killed_mid_fan_out_and_mid_delivery_then_restarted_nobody_missed_or_sent_twice(
    app, client, auth, make_topic
):
    make_topic("news", double_opt_in=False)
    subscribers = add_subscribers(800, "fan")
    with ScriptedSmtpServer() as smtp:
        smtp.delay = 0.01  # slow enough that the second kill lands mid-delivery
        campaign_id = start_campaign(client, auth)

        # 1. Killed while fanning out: some batches committed, the rest not yet.
        first = worker(app, smtp)
        try:
            wait_for(lambda: campaign(campaign_id).fanout_cursor >= SPACING * len(subscribers) // 3,
                     60, "a third of the fan-out", every=0.005)
            kill(first)
        finally:
            stop(first)
        state = campaign(campaign_id)
        assert not state.fanout_done, "killed too late: the fan-out was already done"
        queued_before = sum(messages_of(campaign_id).values())
        assert queued_before < len(subscribers)
        expire_fanout_lease(campaign_id)

        # 2. Killed mid-delivery, with mail claimed, queued and in flight.
        second = worker(app, smtp)
        try:
            already = len(smtp.messages)
            smtp.wait_for_messages(already + 250, timeout=90)
            kill(second)
        finally:
            stop(second)
        delivered_at_kill = len(smtp.messages)
        assert delivered_at_kill < len(subscribers), "killed too late to test anything"
        expire_fanout_lease(campaign_id)  # in case the fan-out was still going on

        # 3. Restarted: it finishes the campaign.
        third = worker(app, smtp)
        try:
            wait_for(lambda: campaign(campaign_id).status == "finished", 120,
                     "the campaign to finish")
        finally:
            stop(third)
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)

    assert set(received) == set(subscribers)  # none missing, nobody else
    duplicates = sum(n - 1 for n in received.values())
    # Only mail a killed worker held (claimed, queued, or sent and not yet recorded) can go
    # twice: at most three batches per kill.
    assert duplicates <= 2 * 3 * BATCH, duplicates
    # One outbox row per address, whatever was fanned out twice: a database fact.
    assert messages_of(campaign_id) == {"sent": len(subscribers)}
    stats = client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth).get_json()["stats"]
    assert stats["recipients"] == stats["sent"] == len(subscribers)


@pytest.mark.postgres
def test_two_workers_on_postgresql_send_a_campaign_to_each_address_once(
    app, client, auth, make_topic, postgres_url
):
    make_topic("news", double_opt_in=False)
    subscribers = add_subscribers(1500, "pair")
    with ScriptedSmtpServer() as smtp:
        smtp.delay = 0.002
        campaign_id = start_campaign(client, auth)
        # Both start on a due campaign: one fans it out while both deliver what is queued.
        workers = [worker(app, smtp), worker(app, smtp)]
        try:
            wait_for(lambda: campaign(campaign_id).status == "finished", 120,
                     "the campaign to finish")
            assert all(p.poll() is None for p in workers), "a worker died"
        finally:
            for process in workers:
                stop(process)
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)

    assert received == collections.Counter(subscribers)  # each exactly once
    assert messages_of(campaign_id) == {"sent": len(subscribers)}
