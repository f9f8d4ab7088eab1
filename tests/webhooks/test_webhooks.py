"""Webhooks end to end: the API, a real worker and SMTP server, a real receiving HTTP server."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from config import config_from_env
from mailer import addresses
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.webhooks import services as webhooks
from mailer.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import key_with
from tests.webhooks import Receiver, run_worker, signatures, verifies

HOOKS = "/api/v1/webhooks"
ALL_EVENTS = webhooks.EVENT_TYPES
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Gitarre", "price": "€399"}],
           "total": "€399"}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def register(client, auth, url, events=None):
    response = client.post(HOOKS, json={"url": url, "events": events or ALL_EVENTS},
                           headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def send_receipt(client, auth, to="buyer@example.com"):
    response = client.post("/api/v1/messages", json={
        "to": to, "template": "receipt", "data": RECEIPT, "category": "transactional"},
        headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_endpoints_are_registered_listed_read_and_deleted(client, auth, receiver):
    created = register(client, auth, receiver.url, ["message.sent"])
    assert set(created) == {"id", "secret"} and created["secret"].startswith("whsec_")

    listed = client.get(HOOKS, headers=auth).get_json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert listed[0]["events"] == ["message.sent"] and "secret" not in listed[0]
    one = client.get(f"{HOOKS}/{created['id']}", headers=auth)
    assert one.status_code == 200 and one.get_json()["url"] == receiver.url
    assert "secret" not in one.get_json()

    assert client.delete(f"{HOOKS}/{created['id']}", headers=auth).status_code == 204
    assert client.get(f"{HOOKS}/{created['id']}", headers=auth).status_code == 404


def test_the_scope_and_the_events_are_checked(client, auth, receiver):
    refused = client.post(HOOKS, json={"url": receiver.url, "events": ["message.sent"]},
                          headers=key_with("contacts:read"))
    assert refused.status_code == 403
    unknown = client.post(HOOKS, json={"url": receiver.url, "events": ["message.opened"]},
                          headers=auth)
    assert unknown.status_code == 422
    assert client.get(HOOKS, headers=auth).get_json() == []


@pytest.mark.parametrize("url", [
    "http://93.184.216.34/hook",            # not https
    "https://127.0.0.1/hook",               # loopback
    "https://10.1.2.3/hook",                # private
    "https://169.254.169.254/latest",       # link-local (cloud metadata)
    "https://[::1]/hook",
    "https://localhost/hook",
])
def test_without_private_addresses_only_public_https_urls_are_taken(url):
    assert webhooks.url_problem(url, allow_private=False) is not None
    assert webhooks.url_problem(url, allow_private=True) is None


def test_a_public_https_url_is_taken_without_private_addresses():
    assert webhooks.url_problem("https://93.184.216.34/hook", allow_private=False) is None


def test_private_addresses_are_allowed_by_default_outside_production_only():
    assert config_from_env({}).MAILER_WEBHOOK_ALLOW_PRIVATE is True
    assert config_from_env({"MAILER_WEBHOOK_ALLOW_PRIVATE": "0"}) \
        .MAILER_WEBHOOK_ALLOW_PRIVATE is False


def test_the_api_refuses_a_private_url_when_not_allowed(app, client, auth, receiver):
    app.config["MAILER_WEBHOOK_ALLOW_PRIVATE"] = False
    try:
        response = client.post(HOOKS, json={"url": receiver.url, "events": ["message.sent"]},
                               headers=auth)
    finally:
        app.config["MAILER_WEBHOOK_ALLOW_PRIVATE"] = True
    assert response.status_code == 422
    assert "url" in response.get_json()["error"]["fields"]


def test_events_are_signed_and_retried_after_a_500_until_delivered(
        app, client, auth, smtp, receiver, make_topic):
    hook = register(client, auth, receiver.url)
    make_topic("news", double_opt_in=False)
    added = client.post("/api/v1/contacts", json={"email": "fan@example.com",
                                                  "topics": ["news"]}, headers=auth)
    assert added.status_code == 201
    message_id = send_receipt(client, auth)
    receiver.statuses = [500]  # the first attempt fails

    run_worker(app, smtp.url)

    assert receiver.answered[0] == 500 and len(receiver.received) == 3
    failed_body = receiver.received[0].body
    assert [r.body for r in receiver.received].count(failed_body) == 2  # the same event again
    assert all(verifies(hook["secret"], r) for r in receiver.received)
    assert not verifies("whsec_other", receiver.received[0])  # the check can fail
    events = {e["type"]: e for e in receiver.delivered()}
    assert set(events) == {"contact.subscribed", "message.sent"}
    assert events["message.sent"]["data"]["message_id"] == message_id
    subscribed = events["contact.subscribed"]
    assert subscribed["data"]["email"] == "fan@example.com"
    assert subscribed["data"]["topic"] == "news"
    assert set(subscribed) == {"id", "type", "created_at", "data"}
    timestamp, _ = signatures(receiver.received[0].headers["Mailer-Signature"])
    assert abs(int(timestamp) - dt.datetime.now(dt.UTC).timestamp()) < 60

    rows = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert [(r.status, r.body) for r in rows] == [("delivered", None)] * 2  # no body kept
    assert sum(r.attempts for r in rows) == 3
    assert smtp.messages  # the mail itself went out through real SMTP


def test_an_event_that_never_gets_a_2xx_is_marked_failed_after_the_window(
        app, client, auth, smtp, receiver):
    register(client, auth, receiver.url, ["message.sent"])
    send_receipt(client, auth)
    receiver.statuses = [503] * 100
    original = webhooks.RETRY_WINDOW
    webhooks.RETRY_WINDOW = dt.timedelta(seconds=1)
    try:
        run_worker(app, smtp.url)
    finally:
        webhooks.RETRY_WINDOW = original
    [row] = db.session.scalars(select(WebhookDelivery)).all()
    assert row.status == "failed" and row.body is None
    assert row.attempts >= 2 and row.last_error == "HTTP 503"


def test_events_about_one_contact_arrive_in_order(app, client, auth, smtp, receiver,
                                                  make_topic):
    register(client, auth, receiver.url, ["contact.subscribed", "contact.unsubscribed"])
    make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", json={"email": "fan@example.com", "topics": ["news"]},
                headers=auth)
    changed = client.patch("/api/v1/contacts/fan@example.com",
                           json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    assert changed.status_code == 200, changed.get_json()
    receiver.statuses = [500, 500]  # the first event fails twice: the second must wait

    run_worker(app, smtp.url)

    assert [e["type"] for e in receiver.delivered()] == ["contact.subscribed",
                                                         "contact.unsubscribed"]
    assert [r.event["type"] for r in receiver.received][:2] == ["contact.subscribed"] * 2


def test_no_event_names_a_tell_a_friend_recipient(app, client, auth, smtp, receiver):
    register(client, auth, receiver.url)
    friend = "bob.friend.zq9@example.org"
    smtp.script_rcpt(friend, ["550 5.1.1 no such user"])  # a hard bounce: a mark, no event
    response = client.post("/api/v1/referrals", json={
        "sender_email": "ann.sender.k4q@example.com", "sender_name": "Ann",
        "recipient_email": friend,
        "data": {"item_name": "Blue Guitar", "item_url": "http://127.0.0.1:5000/p/blue"}},
        headers=auth)
    response.get_data()
    response.close()
    assert response.status_code == 202
    # The friend is a contact of the calling service too: its own events would name it, a
    # bounce of the referral mail must not.
    added = client.post("/api/v1/contacts", json={"email": friend}, headers=auth)
    assert added.status_code == 201, added.get_json()
    send_receipt(client, auth)  # positive control: this one's event does arrive

    run_worker(app, smtp.url)

    assert Reason.BOUNCED in suppressions.marks(addresses.hash_of(friend))  # it did bounce
    assert [e["type"] for e in receiver.delivered()] == ["message.sent"]
    assert all(friend.encode() not in r.body for r in receiver.received)
    assert db.session.scalar(select(WebhookDelivery.event_type).where(
        WebhookDelivery.event_type != "message.sent")) is None


def test_a_rotated_secret_signs_beside_the_old_one_for_a_while(
        app, client, auth, smtp, receiver):
    hook = register(client, auth, receiver.url, ["message.sent"])
    rotated = client.post(f"{HOOKS}/{hook['id']}/rotate", headers=auth)
    assert rotated.status_code == 200
    new_secret = rotated.get_json()["secret"]
    assert new_secret != hook["secret"]
    send_receipt(client, auth)

    run_worker(app, smtp.url)

    [received] = receiver.received
    _, values = signatures(received.headers["Mailer-Signature"])
    assert len(values) == 2
    assert verifies(hook["secret"], received) and verifies(new_secret, received)

    # Once the overlap is over, only the new secret signs.
    endpoint = db.session.scalar(select(WebhookEndpoint))
    endpoint.previous_secret_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    db.session.commit()
    send_receipt(client, auth, to="other@example.com")
    run_worker(app, smtp.url)
    latest = receiver.received[-1]
    assert len(signatures(latest.headers["Mailer-Signature"])[1]) == 1
    assert verifies(new_secret, latest) and not verifies(hook["secret"], latest)


def test_a_deleted_endpoint_gets_nothing_more(app, client, auth, smtp, receiver):
    kept_receiver = Receiver()
    try:
        gone = register(client, auth, receiver.url, ["message.sent"])
        register(client, auth, kept_receiver.url, ["message.sent"])
        send_receipt(client, auth)
        assert client.delete(f"{HOOKS}/{gone['id']}", headers=auth).status_code == 204
        send_receipt(client, auth, to="other@example.com")

        run_worker(app, smtp.url)

        assert receiver.received == []
        assert len(kept_receiver.delivered()) == 2  # positive control
    finally:
        kept_receiver.close()


def test_openapi_lists_the_webhook_endpoints(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert set(paths["/api/v1/webhooks"]) >= {"get", "post"}
    assert set(paths["/api/v1/webhooks/{webhook_id}"]) >= {"get", "delete"}
    assert "post" in paths["/api/v1/webhooks/{webhook_id}/rotate"]


def test_failed_suppressed_and_bounced_are_told_with_ids_and_the_contacts_address(
        app, client, auth, smtp, receiver, make_topic):
    register(client, auth, receiver.url,
             ["message.failed", "message.suppressed", "contact.bounced"])
    make_topic("news", double_opt_in=False)
    for address in ("fan@example.com", "bob@example.com"):
        added = client.post("/api/v1/contacts", json={"email": address, "topics": ["news"]},
                            headers=auth)
        assert added.status_code == 201
    promo = client.post("/api/v1/messages", json={
        "to": "fan@example.com", "template": "newsletter", "category": "promotional",
        "topic": "news", "data": {"headline": "Sale", "intro": "Now."}}, headers=auth)
    assert promo.status_code == 202, promo.get_json()
    # Unsubscribed before the worker gets to it: the gate stops it there.
    changed = client.patch("/api/v1/contacts/fan@example.com",
                           json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    assert changed.status_code == 200
    smtp.script_rcpt("bob@example.com", ["550 5.1.1 no such user"])
    bounced = send_receipt(client, auth, to="bob@example.com")

    run_worker(app, smtp.url)

    events = {e["type"]: e["data"] for e in receiver.delivered()}
    assert events["message.suppressed"]["message_id"] == promo.get_json()["id"]
    assert events["message.failed"] == {"message_id": bounced, "category": "transactional"}
    assert events["contact.bounced"]["email"] == "bob@example.com"
    assert set(events) == {"message.suppressed", "message.failed", "contact.bounced"}


def test_housekeeping_forgets_final_deliveries_after_30_days_and_keeps_pending_ones(
        client, auth, receiver):
    from mailer.delivery.worker import housekeeping

    register(client, auth, receiver.url, ["message.sent"])
    endpoint = db.session.scalar(select(WebhookEndpoint))
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
    for status, finished in (("delivered", old), ("failed", old), ("pending", None),
                             ("delivered", dt.datetime.now(dt.UTC))):
        db.session.add(WebhookDelivery(endpoint_id=endpoint.id, event_id=f"evt_{status}",
                                       event_type="message.sent", status=status,
                                       finished_at=finished, created_at=old))
    db.session.commit()
    housekeeping()
    left = db.session.scalars(select(WebhookDelivery.status).order_by(WebhookDelivery.id))
    assert list(left) == ["pending", "delivered"]
