"""A connection the PostgreSQL server dropped between requests (a restart, an idle timeout,
`pg_terminate_backend`) is never the next request's problem: the session's pool checks each
connection it hands out (`pool_pre_ping`) and replaces a dead one before the request uses it."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool
from werkzeug.test import Client

from mailer import addresses
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.compose import unsubscribe_token

CONTACTS = "/api/v1/contacts"
pytestmark = pytest.mark.postgres


def _backend(connection) -> int:
    """The server process of a connection."""
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _terminate(pids: list[int]) -> None:
    """End those server processes, and wait until they have ended (PostgreSQL 14 and newer),
    from a connection outside the app's pool."""
    outside = create_engine(db.engine.url, poolclass=NullPool)
    try:
        with outside.connect() as connection:
            for pid in pids:
                assert connection.exec_driver_sql(
                    f"SELECT pg_terminate_backend({int(pid)}, 5000)").scalar() is True
    finally:
        outside.dispose()


def _pooled_backends(count: int) -> list[int]:
    """Leave `count` idle connections in a fresh pool (the ones the next requests get) and
    return their server processes."""
    db.session.remove()  # the test's session gives its connection back too
    db.engine.dispose()
    connections = [db.engine.connect() for _ in range(count)]
    pids = [_backend(connection) for connection in connections]
    for connection in connections:
        connection.close()
    return pids


def test_a_contact_and_a_one_click_survive_a_connection_killed_between_requests(
        postgres_url, client, auth, make_topic):
    news_id = make_topic("news", double_opt_in=False).id
    killed = _pooled_backends(1)
    _terminate(killed)
    response = client.post(CONTACTS, headers=auth,
                           json={"email": "fan@example.com", "topics": ["news"]})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["subscriptions"] == {"news": "subscribed"}
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 1

    token = unsubscribe_token(addresses.hash_of("fan@example.com"), news_id, None)
    killed = _pooled_backends(1)
    _terminate(killed)
    answer = Client(client.application).post(
        f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    response = client.get("/api/v1/contacts/fan@example.com", headers=auth)
    assert response.get_json()["subscriptions"] == {"news": "unsubscribed"}


def test_a_new_contact_survives_every_pooled_connection_killed(postgres_url, client, auth):
    """As after a restart of the server: every connection in the pool is dead."""
    killed = _pooled_backends(3)
    _terminate(killed)
    response = client.post(CONTACTS, headers=auth, json={"email": "ann@example.com"})
    assert response.status_code == 201, response.get_json()
    with db.engine.connect() as connection:
        assert _backend(connection) not in killed

