"""The worker against a real SMTP server (aiosmtpd) and the real database."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.delivery.helpers import FAST, run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer

NEWS = {"headline": "Spring sale", "intro": "Strings half price."}
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Gitarre", "price": "€399"}],
           "total": "€399"}


@pytest.fixture
def subscriber(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", json={"email": "fan@example.com", "topics": ["news"]},
                headers=auth)
    return "fan@example.com"


def send(client, auth, **body):
    response = client.post("/api/v1/messages", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def status(client, auth, message_id):
    response = client.get(f"/api/v1/messages/{message_id}", headers=auth)
    assert response.status_code == 200, response.get_json()  # says why when it is not
    return response.get_json()


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_mail_is_delivered_with_one_click_headers_only_when_promotional(
    app, client, auth, smtp, subscriber
):
    promo = send(client, auth, to=subscriber, template="newsletter", data=NEWS,
                 category="promotional", topic="news")
    receipt = send(client, auth, to="buyer@example.com", template="receipt", data=RECEIPT,
                   category="transactional")
    run_worker_until_idle(app, smtp.url)

    assert status(client, auth, promo)["status"] == "sent"
    assert status(client, auth, receipt)["status"] == "sent"
    by_rcpt = {m.rcpt_tos[0]: parse(m.data) for m in smtp.messages}
    assert set(by_rcpt) == {"fan@example.com", "buyer@example.com"}

    newsletter = by_rcpt["fan@example.com"]
    assert newsletter["Subject"] == "Spring sale"
    assert newsletter["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(r"<(http://127\.0\.0\.1:5000/unsubscribe/[^>]+)>",
                        newsletter["List-Unsubscribe"]).group(1)
    assert newsletter["List-Id"] == "<news.127.0.0.1>"
    assert newsletter["Message-ID"] == f"<{promo}@shop.example>"
    text = newsletter.get_body(("plain",)).get_content()
    html = newsletter.get_body(("html",)).get_content()
    postal = app.config["MAILER_POSTAL_ADDRESS"]
    for part in (text, html):
        assert link in part and postal in part
    assert len(re.findall(re.escape(link), text)) == 1  # the footer was added once

    receipt_mail = by_rcpt["buyer@example.com"]
    assert receipt_mail["List-Unsubscribe"] is None
    assert "Gitarre" in receipt_mail.get_body(("plain",)).get_content()
    assert receipt_mail["Date"] and receipt_mail["Message-ID"] != newsletter["Message-ID"]


def test_the_unsubscribe_link_in_a_delivered_mail_works_by_one_click(
    app, client, auth, smtp, subscriber
):
    send(client, auth, to=subscriber, template="newsletter", data=NEWS,
         category="promotional", topic="news")
    run_worker_until_idle(app, smtp.url)
    link = parse(smtp.messages[0].data)["List-Unsubscribe"].strip("<>")
    path = link.removeprefix("http://127.0.0.1:5000")
    assert client.get(path).status_code == 200  # a GET changes nothing
    contact = client.get("/api/v1/contacts/fan@example.com", headers=auth).get_json()
    assert contact["subscriptions"] == {"news": "subscribed"}
    response = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    contact = client.get("/api/v1/contacts/fan@example.com", headers=auth).get_json()
    assert contact["subscriptions"] == {"news": "unsubscribed"}
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_consent_withdrawn_between_accept_and_delivery_means_not_sent(
    app, client, auth, smtp, subscriber
):
    message_id = send(client, auth, to=subscriber, template="newsletter", data=NEWS,
                      category="promotional", topic="news")
    client.patch(f"/api/v1/contacts/{subscriber}",
                 json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    run_worker_until_idle(app, smtp.url)
    assert smtp.messages == []
    result = status(client, auth, message_id)
    assert result["status"] == "suppressed" and result["last_error"] == "unsubscribed"


def test_a_temporary_failure_is_deferred_then_delivered(app, client, auth, smtp):
    smtp.script_rcpt("buyer@example.com", ["451 4.3.0 try again later", None])
    message_id = send(client, auth, to="buyer@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    result = status(client, auth, message_id)
    assert result["status"] == "sent" and result["attempts"] == 2
    assert len(smtp.messages) == 1


def test_a_hard_bounce_fails_records_the_reply_and_suppresses_the_address(
    app, client, auth, smtp
):
    smtp.script_rcpt("gone@example.com", ["550 5.1.1 <gone@example.com>: no such user"])
    message_id = send(client, auth, to="gone@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    run_worker_until_idle(app, smtp.url)
    result = status(client, auth, message_id)
    assert result["status"] == "failed" and result["last_error"].startswith("550")
    assert "gone@example.com" not in result["last_error"]
    address_hash = addresses.hash_of("gone@example.com")
    assert Reason.BOUNCED in suppressions.marks(address_hash)
    event = db.session.scalar(select(ConsentEvent).where(ConsentEvent.address_hash == address_hash))
    assert (event.state, event.source) == ("bounced", "bounce")
    # And nothing more is accepted for it, not even transactional mail.
    refused = client.post("/api/v1/messages", json={
        "to": "gone@example.com", "template": "receipt", "data": RECEIPT,
        "category": "transactional"}, headers=auth)
    assert refused.get_json()["error"]["reason"] == "bounced"


def test_with_the_smtp_server_down_nothing_is_lost(app, client, auth):
    server = ScriptedSmtpServer().start()
    url = server.url
    server.stop()
    message_id = send(client, auth, to="buyer@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    run_worker_until_idle(app, url)
    result = status(client, auth, message_id)
    assert result["status"] == "deferred" and result["last_error"]
    with ScriptedSmtpServer() as back:
        run_worker_until_idle(app, back.url, until_all_final=True)
        assert status(client, auth, message_id)["status"] == "sent"
        assert len(back.messages) == 1


def test_giving_up_after_the_attempt_limit(app, client, auth, smtp):
    smtp.script_rcpt("busy@example.com", ["452 4.2.2 mailbox full"] * 10)
    message_id = send(client, auth, to="busy@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    result = status(client, auth, message_id)
    # The last deferral is the failure itself, at once and with the server's own reply.
    assert result["status"] == "failed"
    assert result["attempts"] == FAST.max_attempts
    assert result["last_error"] == (f"gave up after {FAST.max_attempts} attempts; "
                                    "last: 452 4.2.2 mailbox full")


def test_a_held_row_whose_lease_ran_out_is_taken_over(app, client, auth, smtp):
    from mailer.delivery import outbox

    message_id = send(client, auth, to="buyer@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    claimed = outbox.claim("dead-worker", 10, lease_seconds=0.5)
    assert [c.public_id for c in claimed] == [message_id]
    assert outbox.claim("other-worker", 10, lease_seconds=30) == []  # still leased
    import time

    time.sleep(0.6)
    run_worker_until_idle(app, smtp.url)
    assert status(client, auth, message_id)["status"] == "sent"
    row = db.session.scalar(select(Message).where(Message.public_id == message_id))
    assert row.lease_owner is None and row.due_at is None


@pytest.mark.parametrize(
    ("code", "reply", "refused", "hard"),
    [
        (550, "5.1.1 no such user", True, True),
        (550, "5.2.1 mailbox disabled", True, True),
        (550, "no such user here", True, True),
        (554, "5.7.1 message refused as spam", True, False),
        (552, "5.2.2 mailbox full", True, False),
        (550, "5.1.1 no such user", False, False),
    ],
)
def test_only_a_mailbox_refusal_is_a_hard_bounce(code, reply, refused, hard):
    from mailer.delivery.transport import Outcome, SendResult
    from mailer.delivery.worker import is_hard_bounce

    result = SendResult(Outcome.PERMANENT, code, reply, recipient_refused=refused)
    assert is_hard_bounce(result) is hard


def test_a_policy_refusal_fails_without_suppressing(app, client, auth, smtp):
    smtp.script_data(["554 5.7.1 refused as spam"])
    message_id = send(client, auth, to="picky@example.com", template="receipt", data=RECEIPT,
                      category="transactional")
    run_worker_until_idle(app, smtp.url)
    assert status(client, auth, message_id)["status"] == "failed"
    assert suppressions.marks(addresses.hash_of("picky@example.com")) == set()


def test_housekeeping_forgets_old_idempotency_records(client, auth):
    import datetime as dt

    from sqlalchemy import update

    from mailer.delivery.worker import housekeeping
    from mailer.messages.models import IdempotencyRecord

    client.post("/api/v1/messages", json={"to": "buyer@example.com", "template": "receipt",
                                          "data": RECEIPT, "category": "transactional"},
                headers={**auth, "Idempotency-Key": "old"})
    client.post("/api/v1/messages", json={"to": "buyer@example.com", "template": "receipt",
                                          "data": RECEIPT, "category": "transactional"},
                headers={**auth, "Idempotency-Key": "new"})
    from mailer.database import utcnow

    db.session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == "old")
                       .values(created_at=utcnow() - dt.timedelta(hours=49)))
    db.session.commit()
    housekeeping()
    assert [r.key for r in db.session.scalars(select(IdempotencyRecord))] == ["new"]


def test_dkim_signature_of_a_delivered_promotional_mail_verifies(app, client, auth, smtp,
                                                                 subscriber, tmp_path):
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailer import _init_dkim

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "dkim.pem").write_bytes(pem)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def dns(name, timeout=5):
        return record if name == b"mail2026._domainkey.shop.example." else None

    saved = {k: app.config.get(k) for k in ("MAILER_DKIM_KEY_FILE", "MAILER_DKIM_SELECTOR",
                                            "MAILER_DKIM_DOMAIN")}
    app.config.update(MAILER_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
                      MAILER_DKIM_SELECTOR="mail2026", MAILER_DKIM_DOMAIN="shop.example")
    _init_dkim(app)
    try:
        send(client, auth, to=subscriber, template="newsletter", data=NEWS,
             category="promotional", topic="news")
        run_worker_until_idle(app, smtp.url)
    finally:
        app.config.update(saved)
        app.extensions.pop("mailer.dkim", None)
    raw = smtp.messages[0].data
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dns)
    signed = re.search(rb"h=([^;]+);", raw.replace(b"\r\n", b"").replace(b" ", b"")).group(1)
    names = {n.lower() for n in signed.split(b":")}
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject"} <= names
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                           b"List-Unsubscribe-Post: nothing")
    assert not dkim.verify(tampered, dnsfunc=dns)
