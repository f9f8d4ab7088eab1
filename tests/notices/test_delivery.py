"""Notices end to end against a real SMTP server and a worker: who gets one (the notice column
of ../shared/CONSENT.md), a policy version at most once per contact however often it is posted,
the consent history and export, and progress counts."""

from __future__ import annotations

import collections

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.consent.services import RequestKind
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.notices.models import NoticeDelivery
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.conftest import key_with
from tests.delivery.helpers import run_worker_until_idle

DATA = {"effective_date": "1 January 2027", "summary": "Bounce reports are kept 30 days.",
        "policy_url": "https://shop.example/privacy"}

# | the address is | who (one address a row) | gets the notice |
TABLE = {
    "subscribed to news": True,
    "subscribed to deals only": True,
    "pending for news, subscribed to deals": True,
    "subscribed, unsubscribed from news by link (a topic mark)": True,
    "pending for news only": False,
    "unsubscribed from news only": False,
    "a contact with no subscription": False,
    "unknown (no contact)": False,
    "bounced": False,
    "complained": False,
    "left": False,
    "blocked": False,
    "quarantined (a Tell-a-Friend recipient)": False,
}


def build_table(make_topic) -> dict[str, str]:
    make_topic("news", double_opt_in=False)
    make_topic("deals", double_opt_in=False)
    emails = {name: f"row{number}@example.com" for number, name in enumerate(TABLE)}

    def mark(name: str, reason: Reason, **kwargs) -> None:
        suppressions.suppress(addresses.hash_of(emails[name]), reason,
                              source=ConsentSource.OPERATOR, **kwargs)

    contacts.upsert(emails["subscribed to news"], topics=["news"])
    contacts.upsert(emails["subscribed to deals only"], topics=["deals"])
    contacts.upsert(emails["pending for news, subscribed to deals"], topics=["news"],
                    kind=RequestKind.UNVERIFIED)
    contacts.upsert(emails["pending for news, subscribed to deals"], topics=["deals"])
    contact = contacts.upsert(emails["subscribed, unsubscribed from news by link (a topic mark)"],
                              topics=["news"]).contact
    mark("subscribed, unsubscribed from news by link (a topic mark)", Reason.UNSUBSCRIBED,
         topic_id=contact.subscriptions[0].topic_id)
    contacts.upsert(emails["pending for news only"], topics=["news"], kind=RequestKind.UNVERIFIED)
    contact = contacts.upsert(emails["unsubscribed from news only"], topics=["news"]).contact
    contacts.update(contact, subscriptions={"news": "unsubscribed"})
    contacts.upsert(emails["a contact with no subscription"])
    for name, reason in (("bounced", Reason.BOUNCED), ("complained", Reason.COMPLAINED),
                         ("left", Reason.LEFT), ("blocked", Reason.BLOCKED),
                         ("quarantined (a Tell-a-Friend recipient)", Reason.QUARANTINED)):
        contacts.upsert(emails[name], topics=["news"])
        mark(name, reason)
    db.session.commit()
    return emails


def post(client, headers, version: str = "2027-01", template: str = "policy_update"):
    return client.post("/api/v1/notices", headers=headers,
                       json={"template": template, "data": DATA, "policy_version": version})


def notice_stats(client, headers, notice_id: str) -> dict[str, int]:
    answer = client.get(f"/api/v1/notices/{notice_id}", headers=headers)
    assert answer.status_code == 200
    return answer.get_json()["stats"]


def test_a_notice_reaches_exactly_the_rows_the_table_allows_and_each_once(
        app, client, smtp, make_topic):
    emails = build_table(make_topic)
    headers = key_with("notices:write")
    answer = post(client, headers)
    assert answer.status_code == 202, answer.get_json()
    notice_id = answer.get_json()["id"]
    expected = sorted(emails[name] for name, allowed in TABLE.items() if allowed)
    assert answer.get_json()["recipients"] == len(expected)

    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == expected
    sample = smtp.messages[0].data
    assert b"Our privacy policy changes on 1 January 2027" in sample
    # A notice is not marketing: no unsubscribe header.
    assert b"List-Unsubscribe" not in sample
    stats = notice_stats(client, headers, notice_id)
    assert stats["recipients"] == len(expected) and stats["sent"] == len(expected)
    assert stats["queued"] == 0

    # Posting the same version again sends nothing more, and says so.
    again = post(client, headers)
    assert again.status_code == 202 and again.get_json()["recipients"] == 0
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert len(smtp.messages) == len(expected)
    assert notice_stats(client, headers, again.get_json()["id"])["sent"] == 0

    # A new version reaches them again, and anyone newly subscribed.
    contacts.upsert("late@example.com", topics=["deals"])
    db.session.commit()
    newer = post(client, headers, version="2027-02")
    assert newer.get_json()["recipients"] == len(expected) + 1
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
    assert received == collections.Counter({**{e: 2 for e in expected}, "late@example.com": 1})


def test_each_recipient_s_consent_history_and_export_record_the_version(
        app, client, auth, smtp, make_topic):
    emails = build_table(make_topic)
    assert post(client, auth).status_code == 202
    export = client.get(f"/api/v1/contacts/{emails['subscribed to deals only']}/export",
                        headers=auth)
    history = export.get_json()["consent_history"]
    notices = [event for event in history if event["subject"] == "notice"]
    assert notices == [{**notices[0], "state": "notified", "source": "api", "note": "2027-01",
                        "topic": None}]
    refused = client.get(f"/api/v1/contacts/{emails['pending for news only']}/export",
                         headers=auth).get_json()
    assert not [e for e in refused["consent_history"] if e["subject"] == "notice"]


def test_consent_is_checked_again_at_delivery(app, client, auth, smtp, make_topic):
    emails = build_table(make_topic)
    answer = post(client, auth).get_json()
    # Between the posting and the delivery the address leaves everything.
    suppressions.suppress(addresses.hash_of(emails["subscribed to news"]), Reason.LEFT,
                          source=ConsentSource.PREFERENCES)
    db.session.commit()
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert emails["subscribed to news"] not in {m.rcpt_tos[0] for m in smtp.messages}
    stats = notice_stats(client, auth, answer["id"])
    assert stats["suppressed"] == 1 and stats["sent"] == answer["recipients"] - 1


def test_only_notice_templates_and_only_with_the_scope(client, auth, make_topic):
    build_table(make_topic)
    refused = post(client, auth, template="newsletter")
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "category_mismatch"
    assert post(client, key_with("messages:send")).status_code == 403
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert db.session.scalar(select(func.count()).select_from(NoticeDelivery)) == 0


@pytest.mark.postgres
def test_concurrent_postings_of_one_version_queue_each_contact_once(app, make_topic,
                                                                     postgres_url):
    """Two postings of a version at the same moment, each in its own connection: the unique
    (policy_version, address_hash) lets each contact's row be stored once, whichever wins."""
    import threading

    from mailer.consent.models import ConsentSource
    from mailer.notices import services as notices

    make_topic("news", double_opt_in=False)
    for number in range(200):
        contacts.upsert(f"reader{number}@example.com", topics=["news"])
    db.session.commit()
    start = threading.Barrier(2)
    answers: list[int] = []

    def post_once() -> None:
        with app.app_context():
            start.wait()
            notice = notices.post("policy_update", DATA, "2027-01", source=ConsentSource.API)
            db.session.commit()
            answers.append(notice.recipients)
            db.session.remove()

    threads = [threading.Thread(target=post_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.remove()
    assert sorted(answers) == [0, 200]
    assert db.session.scalar(select(func.count()).select_from(Message)) == 200
    assert db.session.scalar(select(func.count(func.distinct(Message.address_hash)))) == 200
