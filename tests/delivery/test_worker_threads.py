"""Mails are built on the worker's event loop, and the database is still only touched from the
worker's database thread."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from mailer.delivery import prepare as prepare_module
from mailer.delivery import worker as worker_module
from mailer.extensions import db
from mailer.messages.models import Message
from tests.delivery.helpers import run_worker_until_idle
from tests.sql_events import listening

NEWS = {"headline": "Spring sale", "intro": "Strings half price.",
        "items": [{"name": "Strings", "price": "€5", "url": "https://shop.example/s"}]}
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Gitarre", "price": "€399"}],
           "total": "€399"}


@pytest.fixture
def subscribers(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    addresses = [f"fan{i}@example.com" for i in range(12)]
    for address in addresses:
        client.post("/api/v1/contacts", json={"email": address, "topics": ["news"]},
                    headers=auth)
    return addresses


def send(client, auth, **body):
    response = client.post("/api/v1/messages", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_sql_runs_only_in_the_database_thread_while_mails_are_built_on_the_loop(
    app, client, auth, smtp, subscribers, monkeypatch
):
    for address in subscribers:
        send(client, auth, to=address, template="newsletter", data=NEWS,
             category="promotional", topic="news")
    send(client, auth, to="buyer@example.com", template="receipt", data=RECEIPT,
         category="transactional")
    db.session.remove()

    sql_threads: set[str] = set()
    build_threads: set[str] = set()
    real_build_one = prepare_module.build_one

    def recording_build_one(pending):
        build_threads.add(threading.current_thread().name)
        return real_build_one(pending)

    def record(conn, cursor, statement, parameters, context, executemany):
        sql_threads.add(threading.current_thread().name)

    monkeypatch.setattr(worker_module, "build_one", recording_build_one)
    with listening(record):
        worker = run_worker_until_idle(app, smtp.url)

    assert worker.sent == len(subscribers) + 1
    assert {m.rcpt_tos[0] for m in smtp.messages} == {*subscribers, "buyer@example.com"}
    assert build_threads == {threading.main_thread().name}  # the event loop's thread
    # The helper's own idle checks run in the database thread too (through the worker).
    assert sql_threads and all(name.startswith("mailer-db") for name in sql_threads), sql_threads


def test_a_mail_that_cannot_be_built_for_a_bug_is_deferred_not_stuck(
    app, client, auth, smtp, subscribers, monkeypatch
):
    broken = send(client, auth, to=subscribers[0], template="newsletter", data=NEWS,
                  category="promotional", topic="news")
    fine = send(client, auth, to=subscribers[1], template="newsletter", data=NEWS,
                category="promotional", topic="news")
    real_build_one = prepare_module.build_one

    def build_one(pending):
        if pending.claimed.public_id == broken:
            raise RuntimeError("a bug")
        return real_build_one(pending)

    monkeypatch.setattr(worker_module, "build_one", build_one)
    run_worker_until_idle(app, smtp.url)

    rows = {m.public_id: m for m in db.session.scalars(select(Message))}
    assert rows[fine].status == "sent"
    assert rows[broken].status == "deferred" and rows[broken].lease_owner is None
    assert rows[broken].last_error == "internal error building the mail (RuntimeError)"
    assert [m.rcpt_tos for m in smtp.messages] == [[subscribers[1]]]
