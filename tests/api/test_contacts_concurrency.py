"""Concurrent POST /api/v1/contacts for one new address: one contact, every answer 201 or 200;
and concurrent first subscriptions of one known contact to one topic: one row, every answer 200.

Each request runs in a thread of its own with its own test client, so each has its own
application context, database session and connection, as under gunicorn. Runs on SQLite and
on PostgreSQL (MAILER_TEST_DATABASE_URL) alike.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer.consent import services as consent_services
from mailer.consent.models import ConsentEvent, Subscription
from mailer.contacts import services as contacts_services
from mailer.contacts.models import Contact
from mailer.extensions import db

CONTACTS = "/api/v1/contacts"


def post_at_once(app, auth, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """POST every body from a thread of its own, all released together; (status, JSON) each."""
    return post_at_once_each(app, auth, [("POST", CONTACTS, body) for body in bodies])


def post_at_once_each(app, auth, calls: list[tuple[str, str, dict[str, Any]]]
                      ) -> list[tuple[int, Any]]:
    """Send each (method, path, JSON body) from a thread of its own, all released together;
    (status, JSON) each."""
    start = threading.Barrier(len(calls), timeout=30)
    results: list[tuple[int, Any] | BaseException | None] = [None] * len(calls)

    def run(index: int, call: tuple[str, str, dict[str, Any]]) -> None:
        method, path, body = call
        try:
            client = app.test_client()
            start.wait()
            response = client.open(path, method=method, json=body, headers=auth)
            results[index] = (response.status_code, response.get_json())
        except BaseException as exc:  # reported below, in the test's own thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request never finished"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def hold_both_at(monkeypatch, *places: tuple[Any, str]) -> None:
    """Hold each of two requests the first time it calls any `module.name` of `places` until
    the other one is there too: both then go on together, the race a plain run only sometimes
    hits."""
    both_there = threading.Barrier(2, timeout=10)
    local = threading.local()

    def holding(original):
        def held(*args: Any, **kwargs: Any):
            if not getattr(local, "waited", False):
                local.waited = True
                both_there.wait()
            return original(*args, **kwargs)
        return held

    for module, name in places:
        monkeypatch.setattr(module, name, holding(getattr(module, name)))


@pytest.fixture
def both_look_before_either_creates(monkeypatch):
    """Both requests insert the contact they found missing: they create the same address."""
    hold_both_at(monkeypatch, (contacts_services, "_insert_new"))


def counts(email: str) -> tuple[int, int, int]:
    db.session.rollback()  # a fresh snapshot: the requests committed in other sessions
    contacts = db.session.scalar(select(func.count()).select_from(Contact)
                                 .where(Contact.email == email))
    subscriptions = db.session.scalar(
        select(func.count()).select_from(Subscription).join(Contact)
        .where(Contact.email == email))
    events = db.session.scalar(
        select(func.count()).select_from(ConsentEvent).join(Contact)
        .where(Contact.email == email, ConsentEvent.subject == "topic"))
    return contacts, subscriptions, events


def test_two_creates_of_one_new_address_race_and_both_succeed(
    app, auth, make_topic, both_look_before_either_creates
):
    make_topic("news", double_opt_in=False)
    body = {"email": "Ann@Example.com", "topics": ["news"], "source": "checkout",
            "attributes": {"country": "DE"}}
    results = post_at_once(app, auth, [body, {**body, "attributes": {"plan": "gold"}}])
    assert sorted(status for status, _ in results) == [200, 201], results
    for _status, answer in results:
        assert answer["email"] == "ann@example.com"
        assert answer["subscriptions"] == {"news": "subscribed"}
    # The loser continued as an update of the winner's contact: both attributes are kept.
    assert max((answer for _s, answer in results), key=lambda a: len(a["attributes"]))[
        "attributes"] == {"country": "DE", "plan": "gold"}
    assert counts("ann@example.com") == (1, 1, 1)


def test_a_double_opt_in_race_leaves_one_pending_subscription(
    app, auth, make_topic, both_look_before_either_creates
):
    make_topic("news", double_opt_in=True)
    body = {"email": "ann@example.com", "topics": ["news"]}
    results = post_at_once(app, auth, [body, body])
    assert sorted(status for status, _ in results) == [200, 201], results
    assert all(answer["subscriptions"] == {"news": "pending"} for _s, answer in results)
    assert counts("ann@example.com") == (1, 1, 1)


def test_many_simultaneous_creates_of_one_address_make_one_contact(app, auth, make_topic):
    make_topic("news", double_opt_in=False)
    body = {"email": "bob@example.com", "topics": ["news"]}
    results = post_at_once(app, auth, [body] * 6)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [201], results
    assert counts("bob@example.com") == (1, 1, 1)


@pytest.fixture
def both_insert_the_first_subscription(monkeypatch):
    """Both requests insert the subscription they found missing: they make the first
    subscription of one contact to one topic together."""
    hold_both_at(monkeypatch, (consent_services, "_insert_subscription"))


def existing_contact(client, auth, email: str) -> None:
    response = client.post(CONTACTS, json={"email": email}, headers=auth)
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("double_opt_in", [False, True])
def test_two_first_subscriptions_of_a_known_contact_race_and_both_answer(
    app, auth, client, make_topic, both_insert_the_first_subscription, double_opt_in
):
    make_topic("news", double_opt_in=double_opt_in)
    existing_contact(client, auth, "cat@example.com")
    body = {"email": "cat@example.com", "topics": ["news"], "source": "checkout"}
    results = post_at_once(app, auth, [body, body])
    assert [status for status, _ in results] == [200, 200], results
    state = "pending" if double_opt_in else "subscribed"
    assert all(answer["subscriptions"] == {"news": state} for _s, answer in results)
    # One row, and one consent event: the loser found the state it asked for already there.
    assert counts("cat@example.com") == (1, 1, 1)


def test_a_subscription_racing_an_unsubscribe_of_a_known_contact_answers(
    app, auth, client, make_topic, both_insert_the_first_subscription
):
    """A request asking for the topic and another leaving it (a topic never asked for gets an
    unsubscribed row too) both make the first row; whichever comes second works on the
    other's row as on any existing one."""
    make_topic("news", double_opt_in=False)
    existing_contact(client, auth, "dan@example.com")
    results = post_at_once_each(app, auth, [
        ("POST", CONTACTS, {"email": "dan@example.com", "topics": ["news"]}),
        ("PATCH", f"{CONTACTS}/dan@example.com", {"subscriptions": {"news": "unsubscribed"}}),
    ])
    assert [status for status, _ in results] == [200, 200], results
    db.session.rollback()
    states = db.session.scalars(
        select(Subscription.state).join(Contact).where(Contact.email == "dan@example.com")).all()
    # Subscribed then left, or left then asked for again (pending: only the address itself
    # may take back its unsubscribe): never a second row, never a 500.
    assert states in (["unsubscribed"], ["pending"]), states
