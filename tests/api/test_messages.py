"""POST /api/v1/messages (single and batch) and GET /api/v1/messages/<id>."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailer.extensions import db
from mailer.messages.models import Message
from tests.conftest import key_with

MESSAGES = "/api/v1/messages"
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Guitar", "price": "€399"}],
           "total": "€399"}
NEWS = {"headline": "Spring sale", "intro": "Strings half price."}


def count_messages() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Message))


@pytest.fixture
def news(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    response = client.post("/api/v1/contacts", json={"email": "fan@example.com",
                                                     "topics": ["news"]}, headers=auth)
    assert response.get_json()["subscriptions"] == {"news": "subscribed"}


def send(client, auth, **overrides):
    body = {"to": "buyer@example.com", "template": "receipt", "data": RECEIPT,
            "category": "transactional"}
    body.update(overrides)
    return client.post(MESSAGES, json=body, headers=auth)


def test_a_transactional_mail_is_accepted_and_its_status_can_be_followed(client, auth):
    response = send(client, auth)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and len(body["id"]) == 32
    status = client.get(f"{MESSAGES}/{body['id']}", headers=auth).get_json()
    assert status["status"] == "queued" and status["category"] == "transactional"
    assert "to" not in status


def test_promotional_mail_needs_a_subscriber(client, auth, news):
    ok = send(client, auth, to="fan@example.com", template="newsletter", data=NEWS,
              category="promotional", topic="news")
    assert ok.status_code == 202
    refused = send(client, auth, to="stranger@example.com", template="newsletter", data=NEWS,
                   category="promotional", topic="news")
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "recipient_suppressed" and error["reason"] == "not_subscribed"
    assert count_messages() == 1


def test_an_unsubscribe_is_seen_at_accept(client, auth, news):
    client.patch("/api/v1/contacts/fan@example.com",
                 json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    refused = send(client, auth, to="fan@example.com", template="newsletter", data=NEWS,
                   category="promotional", topic="news")
    assert refused.get_json()["error"]["reason"] == "unsubscribed"


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"template": "nope"}, "template_error", "template"),
        ({"template": "../receipt"}, "template_error", "template"),
        ({"data": {"order_number": "A-1"}}, "template_error", "data"),
        ({"category": "promotional", "template": "newsletter", "data": NEWS}, "validation_error",
         "topic"),
        ({"category": "promotional", "template": "newsletter", "data": NEWS, "topic": "nope"},
         "validation_error", "topic"),
        ({"category": "confirmation"}, "validation_error", "category"),
        ({"to": "not an address"}, "validation_error", "to"),
        ({"to": "a@example.com\r\nBcc: x@example.com"}, "validation_error", "to"),
        ({"data": {**RECEIPT, "order_number": "A-1\r\nBcc: x@example.com"}}, "header_injection",
         "data"),
        ({"data": "not an object"}, "validation_error", "data"),
        ({"colour": "red"}, "validation_error", "colour"),
    ],
)
def test_bad_sends_are_refused_at_accept_and_nothing_is_queued(client, auth, overrides, code,
                                                               field):
    response = send(client, auth, **overrides)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code and field in error["fields"], error
    assert count_messages() == 0


def test_promotional_mail_without_a_postal_address_is_refused(app, client, auth, news):
    saved = app.config["MAILER_POSTAL_ADDRESS"]
    app.config["MAILER_POSTAL_ADDRESS"] = None
    try:
        response = send(client, auth, to="fan@example.com", template="newsletter", data=NEWS,
                        category="promotional", topic="news")
    finally:
        app.config["MAILER_POSTAL_ADDRESS"] = saved
    error = response.get_json()["error"]
    assert response.status_code == 422 and error["code"] == "not_configured"
    assert "MAILER_POSTAL_ADDRESS" in error["message"]
    assert count_messages() == 0


def test_same_idempotency_key_and_body_replays_the_first_answer(client, auth):
    headers = {**auth, "Idempotency-Key": "order-A-17"}
    first = send(client, headers)
    second = send(client, headers)
    assert first.status_code == second.status_code == 202
    assert first.get_json() == second.get_json()
    assert count_messages() == 1
    other_body = send(client, headers, to="someone.else@example.com")
    assert other_body.status_code == 409
    assert other_body.get_json()["error"]["code"] == "idempotency_key_reused"
    assert count_messages() == 1


def test_idempotency_keys_belong_to_their_api_key(client, auth):
    headers = {**auth, "Idempotency-Key": "k1"}
    other = {**key_with("messages:send"), "Idempotency-Key": "k1"}
    assert send(client, headers).get_json() != send(client, other).get_json()
    assert count_messages() == 2


def test_a_refused_send_is_not_remembered_under_its_key(client, auth, news):
    headers = {**auth, "Idempotency-Key": "promo-1"}
    body = {"to": "late@example.com", "template": "newsletter", "data": NEWS,
            "category": "promotional", "topic": "news"}
    assert client.post(MESSAGES, json=body, headers=headers).status_code == 422
    client.post("/api/v1/contacts", json={"email": "late@example.com", "topics": ["news"]},
                headers=auth)
    assert client.post(MESSAGES, json=body, headers=headers).status_code == 202


def test_batch_answers_each_item_in_order_and_one_bad_item_sinks_no_other(client, auth, news):
    items = [
        {"to": "a@example.com", "template": "receipt", "data": RECEIPT,
         "category": "transactional"},
        {"to": "stranger@example.com", "template": "newsletter", "data": NEWS,
         "category": "promotional", "topic": "news"},
        {"to": "b@example.com", "template": "receipt", "category": "transactional"},
        "not an object",
        {"to": "fan@example.com", "template": "newsletter", "data": NEWS,
         "category": "promotional", "topic": "news"},
    ]
    response = client.post(f"{MESSAGES}/batch", json={"messages": items}, headers=auth)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [202, 422, 422, 422, 202]
    assert results[1]["error"]["code"] == "recipient_suppressed"
    assert results[2]["error"]["code"] == "template_error"
    assert results[3]["error"]["code"] == "validation_error"
    assert count_messages() == 2
    answers = [client.get(f"{MESSAGES}/{r['id']}", headers=auth)
               for r in results if r["status"] == 202]
    assert [a.status_code for a in answers] == [200, 200], [a.get_json() for a in answers]
    statuses = {a.get_json()["status"] for a in answers}
    assert statuses == {"queued"}


@pytest.mark.parametrize("messages", [[], "x", [{}] * 501])
def test_batch_size_and_shape_are_checked(client, auth, messages):
    response = client.post(f"{MESSAGES}/batch", json={"messages": messages}, headers=auth)
    assert response.status_code == 422
    assert "messages" in response.get_json()["error"]["fields"]


def test_unknown_message_is_404(client, auth):
    response = client.get(f"{MESSAGES}/0123456789abcdef0123456789abcdef", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "message_not_found"


def test_sending_needs_the_scope(client):
    headers = key_with("contacts:read")
    assert send(client, headers).status_code == 403
    assert count_messages() == 0


def test_a_double_opt_in_request_queues_one_confirmation_mail(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    client.post("/api/v1/contacts", json={"email": "new@example.com", "topics": ["news"]},
                headers=auth)
    message = db.session.scalar(select(Message))
    assert message.category == "confirmation" and message.template == "confirm_subscription"
    assert message.data["confirm_url"].startswith("http://127.0.0.1:5000/confirm/")
    assert message.data["topic_names"] == ["News"]


def test_at_most_three_confirmation_mails_a_day(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    for _ in range(5):
        response = client.post("/api/v1/contacts",
                               json={"email": "flood@example.com", "topics": ["news"]},
                               headers=auth)
        assert response.status_code in (200, 201)
        client.patch("/api/v1/contacts/flood@example.com",
                     json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    assert count_messages() == 3
