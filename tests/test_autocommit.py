"""mailer.autocommit: work that stands alone runs on PostgreSQL in autocommit on a pool that
does not ping, and survives its connection having died since its last use."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from werkzeug.test import Client

from mailer import addresses, autocommit
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.compose import unsubscribe_token

CONTACTS = "/api/v1/contacts"


def test_the_pool_without_ping_exists_on_postgresql_only():
    assert autocommit.bind_options("sqlite:////tmp/x.db") == {}
    options = autocommit.bind_options("postgresql+psycopg://u@127.0.0.1/x")
    assert options == {autocommit.BIND_KEY: {
        "url": "postgresql+psycopg://u@127.0.0.1/x", "isolation_level": "AUTOCOMMIT",
        "pool_pre_ping": False}}
    engine = db.engines.get(autocommit.BIND_KEY)
    if db.engine.dialect.name == "postgresql":
        assert engine is not None and engine.url == db.engine.url
        assert engine.pool._pre_ping is False and db.engine.pool._pre_ping is True
    else:
        assert engine is None


def test_work_commits_on_a_connection_of_its_own():
    db.session.commit()

    def write(connection):
        connection.execute(text("INSERT INTO installation (name, value) VALUES ('probe', 'x')"))
        return "done"

    assert autocommit.run_alone(write) == "done"
    db.session.rollback()  # the session saw nothing of it, and undoes nothing of it
    assert db.session.scalar(text("SELECT value FROM installation WHERE name = 'probe'")) == "x"


def test_an_error_that_is_not_a_lost_connection_is_raised_after_one_try():
    tries = []

    def duplicate(connection):
        tries.append(1)
        connection.execute(text("INSERT INTO installation (name, value) VALUES ('dup', 'a')"))
        connection.execute(text("INSERT INTO installation (name, value) VALUES ('dup', 'b')"))

    with pytest.raises(IntegrityError):
        autocommit.run_alone(duplicate)
    assert len(tries) == 1


def test_a_new_contact_pings_no_connection_on_postgresql(client, auth, make_topic, monkeypatch):
    """The request's one statement finds a dead connection itself: no round trip before it."""
    make_topic("news", double_opt_in=False)
    # The first request reads the API key in the session's transaction, the second opens
    # the pool's connection (a new connection is never pinged): the third reuses it.
    for email in ("first@example.com", "second@example.com"):
        db.session.commit()  # a served request starts with no transaction of the session
        assert client.post(CONTACTS, headers=auth, json={"email": email}).status_code == 201
    db.session.commit()
    pings = []
    for engine in db.engines.values():
        ping = engine.dialect.do_ping
        monkeypatch.setattr(engine.dialect, "do_ping",
                            lambda connection, ping=ping: pings.append(1) or ping(connection))
    response = client.post(CONTACTS, headers=auth,
                           json={"email": "ann@example.com", "topics": ["news"]})
    assert response.status_code == 201
    if db.engine.dialect.name == "postgresql":
        assert pings == [], "a connection was pinged"


def _backend(connection) -> int:
    """The server process of a connection."""
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _idle_backend(engine) -> int:
    """The server process of the pool's idle connection (the one the next request gets)."""
    with engine.connect() as connection:
        return _backend(connection)


def _terminate(pid: int) -> None:
    """End that server process, and wait until it has ended (PostgreSQL 14 and newer)."""
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql(
            f"SELECT pg_terminate_backend({int(pid)}, 5000)").scalar() is True


@pytest.mark.postgres
def test_a_contact_and_a_one_click_survive_a_connection_killed_between_requests(
        postgres_url, client, auth, make_topic):
    news = make_topic("news", double_opt_in=False)
    assert client.post(CONTACTS, headers=auth, json={"email": "first@example.com"}).status_code \
        == 201
    engine = db.engines[autocommit.BIND_KEY]
    engine.dispose()  # one connection from here on: the one _idle_backend() finds
    killed = _idle_backend(engine)
    _terminate(killed)
    db.session.commit()  # a served request starts with no transaction of the session
    response = client.post(CONTACTS, headers=auth,
                           json={"email": "fan@example.com", "topics": ["news"]})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["subscriptions"] == {"news": "subscribed"}
    assert _idle_backend(engine) != killed
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 2

    token = unsubscribe_token(addresses.hash_of("fan@example.com"), news.id, None)
    killed = _idle_backend(engine)
    _terminate(killed)
    db.session.commit()  # a served request starts with no transaction of the session
    answer = Client(client.application).post(
        f"/unsubscribe/{token}", data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    assert _idle_backend(engine) != killed
    response = client.get("/api/v1/contacts/fan@example.com", headers=auth)
    assert response.get_json()["subscriptions"] == {"news": "unsubscribed"}


@pytest.mark.postgres
def test_a_new_contact_survives_every_pooled_connection_killed(postgres_url, client, auth):
    """As after a restart of the server: the first dead connection found invalidates the
    pool's older ones, so the one retry gets a new connection, not the next dead one."""
    # The first request reads the API key in the session's transaction; later ones find it
    # cached and leave the session alone.
    assert client.post(CONTACTS, headers=auth, json={"email": "first@example.com"}).status_code \
        == 201
    engine = db.engines[autocommit.BIND_KEY]
    engine.dispose()
    with engine.connect() as first, engine.connect() as second:  # two in the pool
        pids = [_backend(first), _backend(second)]
    for pid in pids:
        _terminate(pid)
    db.session.commit()  # a served request starts with no transaction of the session
    response = client.post(CONTACTS, headers=auth, json={"email": "ann@example.com"})
    assert response.status_code == 201, response.get_json()
    with engine.connect() as connection, engine.connect() as other:
        alive = {_backend(connection), _backend(other)}
    assert not alive & set(pids)
