"""POST /api/v1/referrals end to end: the real database, the real worker, a real SMTP server."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.referrals.models import Referral
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason, Suppression
from tests.conftest import key_with
from tests.referrals import deliver
from tests.smtp_server import ScriptedSmtpServer

REFERRALS = "/api/v1/referrals"
BASE_URL = "http://127.0.0.1:5000"
SENDER = "ann.sender.k4q@example.com"
FRIEND = "bob.friend.zq9@example.org"
ITEM = {"item_name": "Blue Guitar", "item_url": f"{BASE_URL}/p/blue-guitar"}
NEWS = {"headline": "Spring sale", "intro": "Strings half price."}
ACCEPTED = {"status": "accepted"}


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def body(**overrides):
    payload = {"sender_email": SENDER, "sender_name": "Ann", "recipient_email": FRIEND,
               "data": dict(ITEM), "note": "You will love it."}
    payload.update(overrides)
    return payload


def post(client, auth, **overrides):
    return client.post(REFERRALS, json=body(**overrides), headers=auth)


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(mail) -> tuple[str, str]:
    return mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()


def promote(client, auth, to=FRIEND, topic="deals"):
    return client.post("/api/v1/messages", json={
        "to": to, "template": "newsletter", "data": NEWS, "category": "promotional",
        "topic": topic}, headers=auth)


def age_everything(days: float) -> None:
    """Move every referral row and mark back in time, as if `days` had passed."""
    delta = dt.timedelta(days=days)
    for row in [*db.session.scalars(select(Referral)), *db.session.scalars(select(Suppression))]:
        row.created_at -= delta
    db.session.commit()


def raw_sqlite_bytes() -> bytes:
    """The database files' bytes (main file, write-ahead log, index), as they are on disk:
    read by another process, and with no checkpoint of the test's own, so that what the
    worker leaves in the log is seen too.

    Opening the files in this process would drop SQLite's POSIX locks held by the suite's own
    connections (see tests/contacts/test_erasure.py).
    """
    db.session.remove()
    database = Path(db.engine.url.database)
    paths = [str(p) for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
             if p.exists()]
    return subprocess.run(["cat", *paths], capture_output=True, check=True).stdout


def rows_mentioning(*needles: str) -> list[str]:
    """Every row of every table whose text holds one of `needles` (lower-cased)."""
    db.session.rollback()
    found = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)):
            text_of_row = repr(tuple(row)).lower()
            found += [f"{table.name}: {needle}" for needle in needles if needle in text_of_row]
    return found


def test_a_referral_is_delivered_once_with_its_links_and_leaves_no_plaintext_behind(
    app, client, auth, smtp, caplog
):
    caplog.set_level(logging.DEBUG)
    response = post(client, auth, note="<b>Look</b> & see")
    assert response.status_code == 202 and response.get_json() == ACCEPTED
    assert count(Message) == 1
    if db.engine.dialect.name == "sqlite":
        assert FRIEND.encode() in raw_sqlite_bytes()  # positive control: the check can see it

    deliver(app, smtp.url)

    [received] = smtp.messages
    assert received.rcpt_tos == [FRIEND]
    mail = parse(received.data)
    assert mail["Subject"] == "Ann thinks you might like Blue Guitar"
    assert mail["From"] == "Music Store <news@shop.example>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(rf"<({re.escape(BASE_URL)}/unsubscribe/[^>]+)>",
                        mail["List-Unsubscribe"]).group(1)
    assert mail["List-Id"] == "<referral.127.0.0.1>"
    text_part, html_part = parts(mail)
    postal = app.config["MAILER_POSTAL_ADDRESS"]
    for part in (text_part, html_part):
        assert "Ann" in part and "Blue Guitar" in part and ITEM["item_url"] in part
        assert link in part and postal in part
        assert "Never receive mail from us again" in part
    assert "&lt;b&gt;Look&lt;/b&gt; &amp; see" in html_part and "<b>Look</b>" not in html_part
    assert "<b>Look</b> & see" in text_part  # plain text stays as typed
    assert SENDER not in received.data.decode()  # the friend sees the name, not the address

    # Once sent, neither address is stored in plaintext anywhere.
    assert rows_mentioning(FRIEND, SENDER, "bob.friend.zq9", "ann.sender.k4q") == []
    message = db.session.scalar(select(Message))
    assert message.status == "sent" and message.to_address is None and message.data == {}
    if db.engine.dialect.name == "sqlite":
        data = raw_sqlite_bytes()
        for needle in (FRIEND, SENDER, "bob.friend.zq9", "ann.sender.k4q"):
            assert needle.encode() not in data, needle
    # Nor does the service log them (aiosmtpd, the test's SMTP server, logs what it gets).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailer"))
    assert "referral queued message_id=" in ours
    for needle in (FRIEND, SENDER, "bob.friend.zq9", "ann.sender.k4q"):
        assert needle not in ours


def test_ten_referrals_to_one_friend_deliver_one_mail_and_the_answers_are_all_the_same(
    app, client, auth, smtp
):
    answers = {(r.status_code, r.get_data()) for r in (
        post(client, auth, sender_email=f"sender{n}@example.com") for n in range(10))}
    deliver(app, smtp.url)
    assert [m.rcpt_tos for m in smtp.messages] == [[FRIEND]]
    assert answers == {(202, b'{"status":"accepted"}\n')}


def test_the_sender_daily_cap_drops_the_sixth_referral_with_the_same_answer(
    app, client, auth, smtp
):
    answers = [post(client, auth, recipient_email=f"friend{n}@example.org")
               for n in range(6)]
    deliver(app, smtp.url)
    received = sorted(m.rcpt_tos[0] for m in smtp.messages)
    assert received == [f"friend{n}@example.org" for n in range(5)]
    assert {(a.status_code, a.get_data()) for a in answers} == {(202, answers[0].get_data())}
    # The same sender spelled another way is the same sender.
    post(client, auth, sender_email=SENDER.upper(), recipient_email="friend9@example.org")
    assert count(Message) == 5


def confirm_path() -> str:
    db.session.rollback()
    message = db.session.scalar(select(Message).where(Message.category == "confirmation")
                                .order_by(Message.id.desc()))
    return message.data["confirm_url"].removeprefix(BASE_URL)


def test_a_quarantined_friend_gets_promotional_mail_only_after_confirming_themselves(
    app, client, auth, smtp, make_topic
):
    make_topic("deals", double_opt_in=False)
    assert post(client, auth).status_code == 202
    deliver(app, smtp.url)

    refused = promote(client, auth)
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "recipient_suppressed"
    assert refused.get_json()["error"]["reason"] == "not_subscribed"

    # A calling service adding the friend, even to a single opt-in topic, gets only `pending`.
    added = client.post("/api/v1/contacts", json={"email": FRIEND, "topics": ["deals"],
                                                  "source": "newsletter box"}, headers=auth)
    assert added.status_code == 201
    assert added.get_json()["subscriptions"] == {"deals": "pending"}
    assert promote(client, auth).get_json()["error"]["reason"] == "not_subscribed"
    assert suppressions.marks(addresses.hash_of(FRIEND)) == {Reason.QUARANTINED}

    # The friend's own confirmation lifts the quarantine.
    assert client.get(confirm_path()).status_code == 200
    contact = client.get(f"/api/v1/contacts/{FRIEND}", headers=auth).get_json()
    assert contact["subscriptions"] == {"deals": "subscribed"}
    assert suppressions.marks(addresses.hash_of(FRIEND)) == set()
    accepted = promote(client, auth)
    assert accepted.status_code == 202, accepted.get_json()


def test_the_one_click_link_blocks_the_friend_and_later_referrals_are_dropped(
    app, client, auth, smtp
):
    post(client, auth)
    deliver(app, smtp.url)
    mail = parse(smtp.messages[0].data)
    path = mail["List-Unsubscribe"].strip("<>").removeprefix(BASE_URL)

    # As a mail provider sends it: no cookie, no CSRF token.
    provider = app.test_client(use_cookies=False)
    response = provider.post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert Reason.BLOCKED in suppressions.marks(addresses.hash_of(FRIEND))

    age_everything(days=31)  # so neither the 30 days nor the quarantine stands in the way
    again = post(client, auth, sender_email="carol@example.com")
    assert (again.status_code, again.get_json()) == (202, ACCEPTED)
    assert count(Message) == 1
    assert count(Referral) == 1
    # Promotional mail is refused too (blocked, whatever else).
    assert promote(client, auth).status_code == 422


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"extra": 1}, "extra"),
        ({"data": {**ITEM, "price": "€3"}}, "data"),
        ({"sender_email": 5}, "sender_email"),
        ({"sender_name": ["Ann"]}, "sender_name"),
        ({"data": "Blue Guitar"}, "data"),
        ({"note": 5}, "note"),
        ({"sender_email": "ann@"}, "sender_email"),
        ({"recipient_email": "not an address"}, "recipient_email"),
        ({"recipient_email": "b@example.org\r\nBcc: c@example.org"}, "recipient_email"),
        ({"recipient_email": SENDER.upper()}, "recipient_email"),
        ({"sender_name": ""}, "sender_name"),
        ({"sender_name": "Ann\nBcc: x"}, "sender_name"),
        ({"note": "x" * 501}, "note"),
        ({"note": "go to https://evil.example"}, "note"),
        ({"sender_name": "Win at http://evil.example/win"}, "sender_name"),
        ({"data": {"item_name": "Free prize www.evil.example", "item_url": ITEM["item_url"]}},
         "data"),
        ({"data": {"item_name": "Blue Guitar", "item_url": "https://evil.example/p/1"}},
         "data"),
        ({"data": {"item_name": "Blue Guitar"}}, "data"),
        ({"data": {"item_name": "", "item_url": ITEM["item_url"]}}, "data"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(client, auth, overrides, field):
    response = post(client, auth, **overrides)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"], error
    assert count(Message) == count(Referral) == count(Suppression) == 0


def test_a_foreign_item_url_is_named_inside_data(client, auth):
    response = post(client, auth, data={"item_name": "x", "item_url": "https://evil.example/"})
    assert list(response.get_json()["error"]["fields"]) == ["data"]
    assert list(response.get_json()["error"]["fields"]["data"]) == ["item_url"]


def test_missing_fields_and_the_optional_ones(client, auth):
    missing = client.post(REFERRALS, json={}, headers=auth).get_json()["error"]["fields"]
    assert set(missing) == {"sender_email", "recipient_email", "data"}
    minimal = client.post(REFERRALS, json={"sender_email": SENDER, "recipient_email": FRIEND,
                                           "data": ITEM}, headers=auth)
    assert (minimal.status_code, minimal.get_json()) == (202, ACCEPTED)
    message = db.session.scalar(select(Message))
    assert message.data["sender_name"] == "A friend" and message.data["note"] == ""


def test_a_card_number_anywhere_is_refused(client, auth):
    response = post(client, auth, note="my card 4111 1111 1111 1111")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "card_number_refused"
    assert count(Message) == 0


def test_a_key_is_needed_with_the_referrals_scope(client):
    assert client.post(REFERRALS, json=body()).status_code == 401
    assert post(client, {"Authorization": "Bearer nope"}).status_code == 401
    forbidden = post(client, key_with("messages:send", "contacts:write"))
    assert forbidden.status_code == 403
    assert forbidden.get_json()["error"]["code"] == "forbidden"
    assert post(client, key_with("referrals:write")).status_code == 202
    assert count(Message) == 1


def test_the_endpoint_is_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/referrals"]["post"]
    assert "202" in operation["responses"]
    assert operation["security"] == [{"bearerAuth": []}]


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [({"sender_name": "Win at http://evil.example/win"}, {"sender_name": None}),
     ({"data": {"item_name": "Free prize www.evil.example", "item_url": ITEM["item_url"]}},
      {"data": ["item_name"]}),
     ({"sender_name": "evil.example/win", "note": "www.evil.example",
       "data": {"item_name": "visit evil.com", "item_url": ITEM["item_url"]}},
      {"sender_name": None, "note": None, "data": ["item_name"]})],
)
def test_links_in_any_free_text_are_refused_naming_the_field(client, auth, overrides, fields):
    response = post(client, auth, **overrides)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["fields"]) == set(fields)
    messages = []
    for name, inner in fields.items():
        if inner is None:
            messages += error["fields"][name]
        else:
            assert sorted(error["fields"][name]) == inner
            messages += [m for n in inner for m in error["fields"][name][n]]
    assert messages and all(m.startswith("Links cannot be sent") for m in messages)
    assert count(Message) == count(Referral) == count(Suppression) == 0
