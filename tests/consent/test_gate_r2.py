"""The gate changes of issue 15 (CONSENT.md r2), end to end against a real SMTP server: a
quarantined address reads `not_subscribed`, and preference-link mails are capped apart from
subscription confirmations."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailer import addresses
from mailer.consent import gate
from mailer.consent.gate import Category, Stage
from tests.pages.helpers import submit
from tests.referrals import deliver
from tests.smtp_server import ScriptedSmtpServer

FRIEND = "bob.friend.r2@example.org"
ANN = "ann.r2@example.com"


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def subjects(smtp, to: str) -> list[str]:
    found = []
    for message in smtp.messages:
        mail = email.message_from_bytes(message.data, policy=email.policy.default)
        if to in str(mail["To"]):
            found.append(str(mail["Subject"]))
    return found


def test_a_quarantined_address_reads_not_subscribed_to_a_caller(app, client, auth, smtp,
                                                                 make_topic):
    """A calling service must not learn that someone received a Tell-a-Friend mail: the
    refusal of promotional mail to the friend says `not_subscribed`, at accept and at
    delivery alike, like that of any stranger."""
    deals_id = make_topic("deals", double_opt_in=False).id
    referred = client.post("/api/v1/referrals", headers=auth, json={
        "sender_email": "ann.sender.r2@example.com", "sender_name": "Ann",
        "recipient_email": FRIEND, "note": "You will love it.",
        "data": {"item_name": "Blue Guitar", "item_url": "http://127.0.0.1:5000/p/g"}})
    assert referred.status_code == 202
    deliver(app, smtp.url)
    assert len(smtp.messages) == 1  # the friend got the referral mail: now quarantined

    def promote(to: str):
        return client.post("/api/v1/messages", headers=auth, json={
            "to": to, "template": "newsletter", "category": "promotional", "topic": "deals",
            "data": {"headline": "Sale", "intro": "Strings half price."}})

    friend, stranger = promote(FRIEND), promote("stranger.r2@example.org")
    assert friend.status_code == stranger.status_code == 422
    assert friend.get_json()["error"]["reason"] == "not_subscribed"
    assert friend.get_json() == stranger.get_json()
    # At delivery (the reason a suppressed message keeps in its status) as well.
    for to in (FRIEND, "stranger.r2@example.org"):
        decision = gate.check(addresses.hash_of(to), Category.PROMOTIONAL, deals_id,
                              stage=Stage.DELIVERY)
        assert decision.reason == "not_subscribed"


def test_preference_links_cannot_silence_subscription_confirmations(app, client, auth, smtp,
                                                                     make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    assert client.post("/api/v1/contacts", headers=auth, json={
        "email": ANN, "topics": ["deals"]}).status_code == 201
    # Someone asks for Ann's preference link four times: three go out, the fourth is capped.
    for _ in range(4):
        answer = submit(client, "/unsubscribe", {"email": ANN})
        assert answer.status_code == 200
        answer.close()  # the link is looked up and mailed once the answer has gone out
    # Ann then signs up for the newsletter: her confirmation mail still goes out.
    signed = client.post("/api/v1/contacts", headers=auth, json={"email": ANN,
                                                                "topics": ["news"]})
    assert signed.get_json()["subscriptions"]["news"] == "pending"
    deliver(app, smtp.url)
    got = subjects(smtp, ANN)
    preference_links = [s for s in got if "preference" in s.lower()]
    assert len(preference_links) == 3, got
    assert len(got) == 4, got  # and the subscription confirmation
