"""Campaigns end to end: fan-out, the consent gate, pause and resume, against a real SMTP server."""

from __future__ import annotations

import collections
import threading
import time

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.campaigns import scheduler
from mailer.campaigns.fanout import fan_out_batch
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.campaigns import NEWS, start_campaign
from tests.delivery.helpers import FAST, run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def add_subscribers(count: int, prefix: str = "fan", **attributes) -> list[str]:
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    for email in emails:
        contacts.upsert(email, topics=["news"], attributes=attributes or None)
    db.session.commit()
    return emails


def campaign_status(public_id: str) -> str:
    db.session.remove()
    return db.session.scalar(select(Campaign.status).where(Campaign.public_id == public_id))


def test_each_subscriber_gets_exactly_one_mail_and_nobody_else_any(app, client, auth, smtp,
                                                                    make_topic):
    make_topic("news", double_opt_in=False)
    subscribers = add_subscribers(240)
    left = add_subscribers(20, "left")
    for email in left:
        contacts.update(contacts.get(email), subscriptions={"news": "unsubscribed"})
    bounced = add_subscribers(15, "bounced")
    complained = add_subscribers(15, "complained")
    for email in bounced:
        suppressions.suppress(addresses.hash_of(email), Reason.BOUNCED,
                              source=ConsentSource.BOUNCE)
    for email in complained:
        suppressions.suppress(addresses.hash_of(email), Reason.COMPLAINED,
                              source=ConsentSource.COMPLAINT)
    # Tell-a-Friend recipients: quarantined, and a calling service's add only gives pending.
    friends = [f"friend{i}@example.com" for i in range(10)]
    for email in friends:
        suppressions.suppress(addresses.hash_of(email), Reason.QUARANTINED,
                              source=ConsentSource.REFERRAL)
        contacts.upsert(email, topics=["news"])
    contacts.upsert("other@example.com")  # no subscription at all
    db.session.commit()

    campaign_id = start_campaign(client, auth)
    run_worker_until_idle(app, smtp.url, timeout=60,
                          until=lambda: campaign_status(campaign_id) == "finished")

    received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
    assert received == collections.Counter(subscribers)
    stats = client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth).get_json()["stats"]
    assert stats["recipients"] == 240 and stats["sent"] == 240
    sample = smtp.messages[0].data
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in sample


def test_a_segment_narrows_the_recipients(app, client, auth, smtp, make_topic):
    make_topic("news", double_opt_in=False)
    germans = add_subscribers(5, "de", country="DE")
    add_subscribers(5, "fr", country="FR")
    campaign_id = start_campaign(client, auth, segment={"attributes": {"country": "DE"}})
    run_worker_until_idle(app, smtp.url, until=lambda: campaign_status(campaign_id) == "finished")
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == sorted(germans)


def test_an_unsubscribe_during_the_campaign_stops_that_address(app, client, auth, smtp,
                                                                make_topic):
    make_topic("news", double_opt_in=False)
    add_subscribers(5)
    campaign_id = start_campaign(client, auth)
    with app.app_context():
        scheduler.tick("test")  # fan out now, before anything is sent
    contacts.update(contacts.get("fan3@example.com"), subscriptions={"news": "unsubscribed"})
    db.session.commit()
    run_worker_until_idle(app, smtp.url, until=lambda: campaign_status(campaign_id) == "finished")
    assert "fan3@example.com" not in {m.rcpt_tos[0] for m in smtp.messages}
    assert len(smtp.messages) == 4
    stats = client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth).get_json()["stats"]
    assert stats["suppressed"] == 1


def test_fanning_out_twice_queues_nobody_twice(make_topic, client, auth):
    make_topic("news", double_opt_in=False)
    add_subscribers(30)
    campaign_id = start_campaign(client, auth)
    campaign = db.session.scalar(select(Campaign).where(Campaign.public_id == campaign_id))
    assert fan_out_batch(campaign, 1000)
    campaign.fanout_cursor = 0  # as if a worker died before saving its cursor
    fan_out_batch(campaign, 1000)
    db.session.commit()
    rows = db.session.scalars(select(Message.address_hash)
                              .where(Message.campaign_id == campaign.id)).all()
    assert len(rows) == len(set(rows)) == 30


def test_pause_stops_deliveries_within_seconds_and_resume_sends_nobody_twice(
    app, client, auth, smtp, make_topic
):
    make_topic("news", double_opt_in=False)
    subscribers = add_subscribers(150)
    smtp.delay = 0.02
    campaign_id = start_campaign(client, auth)
    url = f"/api/v1/campaigns/{campaign_id}"
    paused_at: dict[str, int] = {}

    def pause_after_some() -> None:
        smtp.wait_for_messages(20, timeout=30)
        with app.app_context():
            assert app.test_client().post(f"{url}/pause", headers=auth).status_code == 200
        time.sleep(2.0)  # "within seconds": what was in flight drains
        paused_at["count"] = len(smtp.messages)
        time.sleep(2.0)
        paused_at["later"] = len(smtp.messages)
        with app.app_context():
            assert app.test_client().post(f"{url}/resume", headers=auth).status_code == 200

    thread = threading.Thread(target=pause_after_some)
    thread.start()
    run_worker_until_idle(app, smtp.url, timeout=90,
                          until=lambda: campaign_status(campaign_id) == "finished")
    thread.join(30)
    assert paused_at["count"] < len(subscribers)
    assert paused_at["later"] == paused_at["count"], "mail went out while paused"
    received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
    assert received == collections.Counter(subscribers)


def test_cancel_marks_what_is_left_cancelled(app, client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    add_subscribers(10)
    campaign_id = start_campaign(client, auth)
    with app.app_context():
        scheduler.tick("test")
    cancelled = client.post(f"/api/v1/campaigns/{campaign_id}/cancel", headers=auth).get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["stats"]["cancelled"] == 10 and cancelled["stats"]["queued"] == 0


def test_a_future_campaign_waits(app, client, auth, smtp, make_topic):
    make_topic("news", double_opt_in=False)
    add_subscribers(3)
    body = {"name": "Later", "topic": "news", "template": "newsletter", "data": NEWS}
    campaign_id = client.post("/api/v1/campaigns", json=body, headers=auth).get_json()["id"]
    client.post(f"/api/v1/campaigns/{campaign_id}/schedule",
                json={"send_at": "2099-01-01T09:00:00+00:00"}, headers=auth)
    with app.app_context():
        scheduler.tick("test")
    assert campaign_status(campaign_id) == "scheduled"
    assert smtp.messages == [] and FAST.batch_size


def test_a_test_send_looks_like_the_campaign_and_says_test(app, client, auth, smtp, make_topic):
    import email
    import email.policy

    make_topic("news", double_opt_in=False)
    add_subscribers(1, "marketer")
    body = {"name": "Winter", "topic": "news", "template": "newsletter", "data": NEWS}
    campaign_id = client.post("/api/v1/campaigns", json=body, headers=auth).get_json()["id"]
    response = client.post(f"/api/v1/campaigns/{campaign_id}/test",
                           json={"to": "marketer0@example.com"}, headers=auth)
    assert response.status_code == 202
    run_worker_until_idle(app, smtp.url)
    mail = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert mail["Subject"] == "[TEST] Winter sale"
    assert mail["List-Unsubscribe"] and app.config["MAILER_POSTAL_ADDRESS"] in (
        mail.get_body(("plain",)).get_content())
    stats = client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth).get_json()
    assert stats["status"] == "draft" and stats["stats"]["recipients"] == 0
    bad = client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"to": "nope"}, headers=auth)
    assert bad.status_code == 422 and "to" in bad.get_json()["error"]["fields"]


def test_a_test_send_is_promotional_mail_of_the_topic_for_the_consent_gate(
    app, client, auth, smtp, make_topic
):
    """A test form must not be a way to market to anyone: the gate's promotional rules hold."""
    make_topic("news", double_opt_in=False)
    make_topic("other", double_opt_in=False)
    (subscriber,) = add_subscribers(1, "tester")
    contacts.upsert("elsewhere@example.com", topics=["other"])
    contacts.upsert("friend@example.com", topics=["news"])  # pending: quarantined below
    suppressions.suppress(addresses.hash_of("friend@example.com"), Reason.QUARANTINED,
                          source=ConsentSource.REFERRAL)
    (left,) = add_subscribers(1, "left")
    suppressions.suppress(addresses.hash_of(left), Reason.LEFT, source=ConsentSource.PREFERENCES)
    db.session.commit()
    body = {"name": "Winter", "topic": "news", "template": "newsletter", "data": NEWS}
    campaign_id = client.post("/api/v1/campaigns", json=body, headers=auth).get_json()["id"]

    refused = {}
    for to in ("stranger@example.com", "elsewhere@example.com", "friend@example.com", left):
        response = client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"to": to},
                               headers=auth)
        assert response.status_code == 422, to
        error = response.get_json()["error"]
        assert error["code"] == "recipient_suppressed" and "subscribed" in error["message"]
        refused[to] = error["reason"]
    assert refused == {"stranger@example.com": "not_subscribed",
                       "elsewhere@example.com": "not_subscribed",
                       "friend@example.com": "not_subscribed", left: "unsubscribed"}
    assert client.post(f"/api/v1/campaigns/{campaign_id}/test", json={"to": subscriber},
                       headers=auth).status_code == 202

    # Consent withdrawn after the test was queued: the gate's second look stops it.
    contacts.update(contacts.get(subscriber), subscriptions={"news": "unsubscribed"})
    db.session.commit()
    run_worker_until_idle(app, smtp.url)
    assert smtp.messages == []
    assert db.session.scalar(select(Message.status)) == "suppressed"


def test_unsubscribes_through_a_campaign_mail_are_counted_not_named(app, client, auth, smtp,
                                                                     make_topic):
    import email
    import email.policy

    from werkzeug.test import Client

    make_topic("news", double_opt_in=False)
    add_subscribers(3)
    campaign_id = start_campaign(client, auth)
    run_worker_until_idle(app, smtp.url, until=lambda: campaign_status(campaign_id) == "finished")
    mail = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    link = mail["List-Unsubscribe"].strip("<>").removeprefix("http://127.0.0.1:5000")
    for _ in range(2):  # the second click changes nothing and counts nothing
        Client(app).post(link, data="List-Unsubscribe=One-Click",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    stats = client.get(f"/api/v1/campaigns/{campaign_id}", headers=auth).get_json()["stats"]
    assert stats["unsubscribed"] == 1
