"""The worker's lease: renewed by primary key for exactly the rows the worker still holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from sqlalchemy import select

from mailer.database import utcnow
from mailer.delivery import outbox
from mailer.extensions import db
from mailer.messages.models import Message
from tests.delivery.helpers import FAST, run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer

RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Gitarre", "price": "€399"}],
           "total": "€399"}


def send(client, auth, to: str) -> str:
    response = client.post("/api/v1/messages", headers=auth, json={
        "to": to, "template": "receipt", "data": RECEIPT, "category": "transactional"})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def due_at(message_id: int) -> dt.datetime:
    db.session.expire_all()
    return db.session.scalar(select(Message.due_at).where(Message.id == message_id))


def test_renew_extends_only_the_rows_named_that_the_owner_still_holds(client, auth):
    for i in range(3):
        send(client, auth, f"buyer{i}@example.com")
    first, second, third = outbox.claim("worker-a", 10, lease_seconds=30)
    before = due_at(third.id)

    assert outbox.renew("worker-a", 600, [first.id, second.id]) == 2
    assert due_at(first.id) > utcnow() + dt.timedelta(seconds=500)
    assert due_at(second.id) > utcnow() + dt.timedelta(seconds=500)
    assert due_at(third.id) == before  # not named: left alone
    # Another owner's renewal touches nothing, even when it names the rows.
    assert outbox.renew("worker-b", 900, [first.id, second.id, third.id]) == 0
    assert due_at(third.id) == before
    # Handed back rows are no longer held: naming them renews nothing.
    outbox.release("worker-a", [third.id])
    assert outbox.renew("worker-a", 600, [third.id]) == 0


@pytest.fixture
def slow_smtp():
    with ScriptedSmtpServer() as server:
        server.delay = 0.4  # each DATA answered after 0.4 s: six mails outlast the lease
        yield server


def test_a_worker_keeps_the_rows_it_holds_beyond_the_lease_and_no_other_takes_them(
    app, client, auth, slow_smtp
):
    ids = [send(client, auth, f"buyer{i}@example.com") for i in range(6)]
    db.session.remove()
    # One connection and a one-second lease: all six are claimed at once and the last is sent
    # more than two seconds later, so its lease must have been renewed twice meanwhile.
    settings = replace(FAST, connections=1, lease_seconds=1.0)
    taken_over: list[str] = []

    def intruder() -> bool:
        # Runs in the worker's database thread between its own statements.
        taken_over.extend(c.public_id for c in outbox.claim("intruder", 10, 30))
        return False

    def done_or_intruded() -> bool:
        intruder()
        return bool(taken_over) or db.session.scalar(
            select(Message.id).where(Message.status != "sent").limit(1)) is None

    run_worker_until_idle(app, slow_smtp.url, settings, timeout=30, until=done_or_intruded)
    assert taken_over == []
    assert len(slow_smtp.messages) == len(ids)
    statuses = db.session.scalars(select(Message.status)).all()
    assert statuses == ["sent"] * len(ids)
