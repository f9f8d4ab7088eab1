"""POST /api/v1/inbound: bounces and complaints handed in as raw mail.

A report acts only on mail the service sent: each test that expects a mark first has a real
worker deliver the mail to aiosmtpd, and writes the report about the Message-ID of the mail
as the SMTP server received it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.apikeys import services as apikeys
from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions.models import Reason, Suppression
from mailer.suppressions.services import marks
from tests.conftest import key_with
from tests.delivery.helpers import run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer
from tests.suppressions.test_reports import fixture

INBOUND = "/api/v1/inbound"
MESSAGES = "/api/v1/messages"
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Guitar", "price": "€399"}],
           "total": "€399"}
NEWS = {"headline": "Spring sale", "intro": "Strings half price."}


def hand_in(client, headers, raw: bytes, content_type: str = "message/rfc822"):
    return client.post(INBOUND, data=raw, headers={**headers, "Content-Type": content_type})


def receipt(client, auth, to: str):
    return client.post(MESSAGES, headers=auth, json={
        "to": to, "template": "receipt", "data": RECEIPT, "category": "transactional"})


def newsletter(client, auth, to: str):
    return client.post(MESSAGES, headers=auth, json={
        "to": to, "template": "newsletter", "data": NEWS, "category": "promotional",
        "topic": "news"})


def subscribe(client, auth, email: str) -> None:
    response = client.post("/api/v1/contacts", headers=auth,
                           json={"email": email, "topics": ["news"]})
    assert response.get_json()["subscriptions"] == {"news": "subscribed"}


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtpServer]:
    with ScriptedSmtpServer() as server:
        yield server


@pytest.fixture
def delivered(app, smtp) -> Callable[..., str]:
    """Deliver what is queued through a real worker to aiosmtpd; the public id in the
    Message-ID of the last mail received (the one a send's answer asked for, when given)."""

    def deliver(answer=None) -> str:
        if answer is not None:
            assert answer.status_code == 202, answer.get_data(as_text=True)
        db.session.commit()
        run_worker_until_idle(app, smtp.url)
        message_id = BytesHeaderParser().parsebytes(smtp.messages[-1].data)["Message-ID"]
        public_id = re.fullmatch(r"<([0-9a-f]{32})@[^<>]+>", message_id.strip()).group(1)
        if answer is not None:
            assert public_id == answer.get_json()["id"]
        return public_id

    return deliver


@pytest.fixture
def news(make_topic):
    make_topic("news", double_opt_in=False)


def events_of(address: str) -> list[tuple[str, str]]:
    db.session.rollback()
    return [(e.state, e.source) for e in db.session.scalars(
        select(ConsentEvent).where(ConsentEvent.address_hash == addresses.hash_of(address))
        .order_by(ConsentEvent.id))]


def marks_of(address: str) -> set[Reason]:
    db.session.rollback()
    return marks(addresses.hash_of(address))


def state() -> tuple[int, int]:
    """How many suppressions and consent events there are."""
    db.session.rollback()
    return (db.session.scalar(select(func.count()).select_from(Suppression)),
            db.session.scalar(select(func.count()).select_from(ConsentEvent)))


def refused(response, reason: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert (error["code"], error["reason"]) == ("recipient_suppressed", reason)


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"])
    return body["error"]["code"]


# --- what a report does ---------------------------------------------------------------------


def test_a_hard_bounce_stops_every_mail_to_the_address(client, auth, news, delivered):
    subscribe(client, auth, "gone@example.com")
    public_id = delivered(receipt(client, auth, "gone@example.com"))

    response = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml", public_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"kind": "bounce", "action": "suppressed", "reason": "bounced",
                                   "status": "5.1.1", "recipients": 1}
    assert "gone" not in response.get_data(as_text=True).lower()
    assert marks_of("gone@example.com") == {Reason.BOUNCED}
    assert ("bounced", "bounce") in events_of("gone@example.com")

    refused(receipt(client, auth, "gone@example.com"), "bounced")
    refused(newsletter(client, auth, "gone@example.com"), "bounced")


def test_a_complaint_stops_promotional_mail_but_not_transactional(client, auth, news,
                                                                  delivered):
    subscribe(client, auth, "fan@example.com")
    raw = fixture("arf_abuse.eml", delivered(newsletter(client, auth, "fan@example.com")))

    response = hand_in(client, auth, raw)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"kind": "complaint", "action": "suppressed",
                                   "reason": "complained", "status": None, "recipients": 1}
    assert "fan" not in response.get_data(as_text=True).lower()
    assert marks_of("fan@example.com") == {Reason.COMPLAINED}
    assert events_of("fan@example.com")[-1] == ("complained", "complaint")

    refused(newsletter(client, auth, "fan@example.com"), "complained")
    assert receipt(client, auth, "fan@example.com").status_code == 202


def test_a_complaint_about_an_erased_address_is_matched_by_our_message_id(client, auth, news,
                                                                         delivered):
    """The report redacts the recipient, and we hold no plaintext copy either."""
    subscribe(client, auth, "fan@example.com")
    public_id = delivered(newsletter(client, auth, "fan@example.com"))
    assert client.delete("/api/v1/contacts/fan@example.com", headers=auth).status_code == 204

    response = hand_in(client, auth, fixture("arf_redacted.eml", public_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["action"] == "suppressed"
    assert marks_of("fan@example.com") == {Reason.ERASED, Reason.COMPLAINED}
    assert ("complained", "complaint") in events_of("fan@example.com")


def test_a_bounce_of_a_referral_is_matched_by_our_message_id(client, auth, delivered):
    """A referral's friend address is in no contact; its outbox row keeps only the hash
    once the mail is final."""
    response = client.post("/api/v1/referrals", headers=auth, json={
        "sender_email": "buyer@example.com", "recipient_email": "friend@example.com",
        "data": {"item_name": "Guitar", "item_url": "http://127.0.0.1:5000/items/guitar"}})
    assert response.status_code == 202, response.get_data(as_text=True)
    response.close()  # the referral is checked and queued once the answer has gone out
    public_id = delivered()
    assert db.session.scalars(select(Message.to_address)).one() is None  # scrubbed once sent
    raw = fixture("dsn_postfix_5_1_1.eml", public_id).replace(b"Gone@Example.com",
                                                              b"redacted")
    response = hand_in(client, auth, raw)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["reason"] == "bounced"
    assert Reason.BOUNCED in marks_of("friend@example.com")


def test_an_exim_bounce_without_a_dsn_part_is_recognized(client, auth, delivered):
    public_id = delivered(receipt(client, auth, "lost@example.com"))
    response = hand_in(client, auth, fixture("exim_5_1_1.eml", public_id))
    assert response.get_json() == {"kind": "bounce", "action": "suppressed", "reason": "bounced",
                                   "status": "5.1.1", "recipients": 1}
    assert marks_of("lost@example.com") == {Reason.BOUNCED}


@pytest.mark.parametrize(
    ("name", "address", "answer"),
    [
        ("dsn_delayed_4_4_1.eml", "slow@example.net",
         {"kind": "delayed", "action": "none", "reason": "temporary", "status": "4.4.1",
          "recipients": 1}),
        ("dsn_policy_5_7_1.eml", "picky@example.org",
         {"kind": "bounce", "action": "none", "reason": "policy", "status": "5.7.1",
          "recipients": 1}),
    ],
    ids=["delayed", "policy"],
)
def test_delays_and_policy_refusals_change_nothing(client, auth, news, delivered, name,
                                                   address, answer):
    subscribe(client, auth, address)
    public_id = delivered(receipt(client, auth, address))
    before = state()
    response = hand_in(client, auth, fixture(name, public_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == answer
    assert state() == before
    assert marks_of(address) == set()
    assert receipt(client, auth, address).status_code == 202
    assert newsletter(client, auth, address).status_code == 202


def test_handing_in_the_same_bounce_twice_is_harmless(client, auth, delivered):
    public_id = delivered(receipt(client, auth, "gone@example.com"))
    for _ in range(2):
        assert hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml", public_id)
                       ).status_code == 200
    assert state() == (1, 1)


# --- refusals: nothing changes --------------------------------------------------------------


@pytest.mark.parametrize("name", ["garbage.eml", "empty.eml"])
def test_what_is_no_report_is_422_and_changes_nothing(client, auth, name):
    receipt(client, auth, "gone@example.com")
    before = state()
    assert error_code(hand_in(client, auth, fixture(name)), 422) == "unrecognized_report"
    assert state() == before


def test_a_report_about_an_address_we_never_mailed_is_422(client, auth):
    receipt(client, auth, "someone.else@example.com")
    before = state()
    response = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml"))
    assert error_code(response, 422) == "no_recipient"
    assert "gone" not in response.get_data(as_text=True).lower()
    assert state() == before
    assert marks_of("gone@example.com") == set()


def test_a_report_that_only_names_an_address_we_mailed_changes_nothing(client, auth, news,
                                                                       delivered):
    """The attack: anyone who can post a report writes one naming a subscriber (no
    Message-ID of ours, or a made-up one) to stop all mail to them; and the answer must not
    tell an address we mailed from one we never did."""
    subscribe(client, auth, "gone@example.com")
    delivered(receipt(client, auth, "gone@example.com"))
    before = state()
    named = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml"))
    assert error_code(named, 422) == "no_recipient"
    assert state() == before and marks_of("gone@example.com") == set()
    never = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml").replace(
        b"Gone@Example.com", b"never.mailed@example.com"))
    assert named.get_data() == never.get_data() and named.status_code == never.status_code
    assert receipt(client, auth, "gone@example.com").status_code == 202


def test_the_message_id_of_a_mail_not_sent_yet_is_not_enough(client, auth, news):
    """The API tells a caller the public id of its queued mail; a report needs mail that
    went out (a bounce of mail never handed to SMTP is forged)."""
    subscribe(client, auth, "gone@example.com")
    queued = receipt(client, auth, "gone@example.com").get_json()["id"]
    response = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml", queued))
    assert error_code(response, 422) == "no_recipient"
    assert marks_of("gone@example.com") == set()


def test_an_unknown_message_id_and_a_redacted_recipient_are_422(client, auth):
    receipt(client, auth, "fan@example.com")
    response = hand_in(client, auth, fixture("arf_redacted.eml"))
    assert error_code(response, 422) == "no_recipient"
    assert state() == (0, 0)


# --- media types, size, keys ----------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", "application/octet-stream",
                                          "message/global"])
def test_a_raw_mail_under_another_accepted_type_is_read(client, auth, delivered, content_type):
    public_id = delivered(receipt(client, auth, "gone@example.com"))
    response = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml", public_id), content_type)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert marks_of("gone@example.com") == {Reason.BOUNCED}


def test_a_json_body_is_415(client, auth):
    response = client.post(INBOUND, json={"raw": "From: x"}, headers=auth)
    assert error_code(response, 415) == "unsupported_media_type"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "image/png", ""])
def test_other_media_types_are_415(client, auth, content_type):
    receipt(client, auth, "gone@example.com")
    response = hand_in(client, auth, fixture("dsn_postfix_5_1_1.eml"), content_type)
    assert error_code(response, 415) == "unsupported_media_type"
    assert state() == (0, 0)


def test_a_body_over_1_mb_is_413(client, auth):
    raw = fixture("dsn_postfix_5_1_1.eml") + b"x" * (1024 * 1024)
    assert error_code(hand_in(client, auth, raw), 413) == "payload_too_large"


def test_no_key_is_401_and_changes_nothing(client, auth):
    receipt(client, auth, "gone@example.com")
    assert error_code(hand_in(client, {}, fixture("dsn_postfix_5_1_1.eml")), 401) == (
        "unauthorized")
    assert state() == (0, 0)


def test_a_key_without_the_inbound_scope_is_403(client, auth):
    receipt(client, auth, "gone@example.com")
    others = [scope for scope in apikeys.SCOPES if scope != "inbound:write"]
    response = hand_in(client, key_with(*others), fixture("dsn_postfix_5_1_1.eml"))
    assert error_code(response, 403) == "forbidden"
    assert "inbound:write" in response.get_json()["error"]["message"]
    assert state() == (0, 0)


def test_a_key_with_only_the_inbound_scope_is_enough(client, auth, delivered):
    public_id = delivered(receipt(client, auth, "gone@example.com"))
    response = hand_in(client, key_with("inbound:write"),
                       fixture("dsn_postfix_5_1_1.eml", public_id))
    assert response.status_code == 200, response.get_data(as_text=True)


def test_the_endpoint_is_in_the_openapi_document(client):
    operation = client.get("/api/v1/openapi.json").get_json()["paths"][INBOUND]["post"]
    assert "message/rfc822" in operation["requestBody"]["content"]
    assert operation["security"] == [{"bearerAuth": []}]
    # The error codes of issue 15, with what they mean now.
    refused = operation["responses"]["422"]["description"]
    assert "`no_recipient`" in refused and "Message-ID" in refused
    assert "`forbidden`" in operation["responses"]["403"]["description"]
    assert "only when it is named" in operation["description"]


def test_the_openapi_document_says_what_partner_sharing_true_does(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    for name in ("ContactCreate", "ContactPatch"):
        described = schemas[name]["properties"]["partner_sharing"]["description"]
        assert "only asks" in described and "withdraws" in described
