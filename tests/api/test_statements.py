"""How many SQL statements the API's busiest requests send, and that they need no session cookie.

Every statement is a round trip (on PostgreSQL) and costs the application about as much again
in SQLAlchemy as the database spends running it: these requests are written to send as few
as their work needs, and these tests keep them there. Each count is taken on the second
request, after the API key is cached (as it is under load). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import session
from flask.sessions import NullSession
from sqlalchemy import func, select

from mailer.contacts.models import Contact
from mailer.extensions import db
from tests.sql_events import listening

CONTACTS = "/api/v1/contacts"
MESSAGES = "/api/v1/messages"
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Guitar", "price": "€399"}],
           "total": "€399"}


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL sent meanwhile, in order (commit and rollback are not statements here)."""
    sent: list[str] = []

    def keep(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        sent.append(" ".join(statement.split()))

    with listening(keep):
        yield sent


def create(client, auth, email: str, topics: list[str]) -> int:
    response = client.post(CONTACTS, headers=auth, json={
        "email": email, "topics": topics, "source": "checkout",
        "attributes": {"country": "DE"}})
    return response.status_code


def autocommit(driver_connection) -> bool:
    if hasattr(driver_connection, "autocommit"):  # psycopg
        return driver_connection.autocommit
    return driver_connection.isolation_level is None  # sqlite3


@contextmanager
def modes() -> Iterator[list[bool]]:
    """Whether each statement sent meanwhile ran in autocommit, in order."""
    seen: list[bool] = []

    def keep(conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
        seen.append(autocommit(conn.connection.driver_connection))

    with listening(keep):
        yield seen


ONE_STATEMENT = "WITH known AS (SELECT (SELECT contacts.id FROM contacts"


def test_a_new_contact_with_a_topic_takes_one_statement_on_postgresql_four_on_sqlite(
        client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    db.session.commit()  # a served request starts with no transaction of the session
    with statements() as sent, modes() as autocommitted:
        assert create(client, auth, "ann@example.com", ["news"]) == 201
    if db.engine.dialect.name == "postgresql":
        # Whether the address is known or marked, the topics, and the contact, its
        # subscription and the consent event written: one statement, in autocommit (no BEGIN,
        # no COMMIT: two round trips less).
        assert len(sent) == 1, sent
        assert sent[0].startswith(ONE_STATEMENT), sent
        for table in ("contacts", "subscriptions", "consent_events"):
            assert f"INSERT INTO {table} " in sent[0], table
        assert autocommitted == [True]
    else:
        # One read (is the address known or marked, and the topics), then each written once.
        assert len(sent) == 4, sent
        assert sent[0].startswith("SELECT") and "topics" in sent[0], sent
        assert [s.split("(")[0].split()[2] for s in sent[1:]] == [
            "contacts", "subscriptions", "consent_events"], sent
        assert autocommitted == [False] * 4
    with db.engine.connect() as connection:  # the pool's connection, back in its mode
        assert not autocommit(connection.connection.driver_connection)


def test_a_new_contact_in_a_transaction_of_the_session_writes_in_it(client, auth, make_topic):
    """A request that has written already (here: the test's own session, which the request
    shares) keeps its one transaction: the contact commits with the rest or not at all."""
    news = make_topic("news", double_opt_in=False)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    news.name = "News, renamed"
    db.session.flush()
    with statements() as sent, modes() as autocommitted:
        assert create(client, auth, "ann@example.com", ["news"]) == 201
    assert len(sent) == (1 if db.engine.dialect.name == "postgresql" else 4), sent
    assert set(autocommitted) == {False}


def test_a_new_contact_without_topics_takes_one_statement_on_postgresql_two_on_sqlite(
        client, auth):
    assert create(client, auth, "first@example.com", []) == 201
    with statements() as sent:
        assert create(client, auth, "ann@example.com", []) == 201
    if db.engine.dialect.name == "postgresql":
        assert len(sent) == 1 and sent[0].startswith(ONE_STATEMENT), sent
    else:
        assert len(sent) == 2, sent
        assert sent[0].startswith("SELECT") and "topics" not in sent[0], sent


def test_a_new_contact_of_a_double_opt_in_topic_writes_in_one_transaction(
        client, auth, make_topic):
    """Its confirmation mail is written too, in the transaction of the contact and its
    pending subscription: none without the other. (On PostgreSQL the one statement found
    that and wrote nothing.)"""
    make_topic("news", double_opt_in=True)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    db.session.commit()
    with statements() as sent, modes() as autocommitted:
        assert create(client, auth, "ann@example.com", ["news"]) == 201
    writes = [s.split("(")[0].split()[2] for s in sent if s.startswith("INSERT")]
    assert writes[:3] == ["contacts", "subscriptions", "consent_events"], sent
    assert "messages" in writes, sent
    # The probe may run alone; every write runs in the request's transaction.
    assert set(autocommitted[1:]) == {False}, autocommitted


def test_an_unknown_topic_is_found_out_by_the_one_read(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    with statements() as sent:
        assert create(client, auth, "ann@example.com", ["news", "nope"]) == 422
    assert len(sent) == 1, sent
    assert sent[0].startswith(ONE_STATEMENT if db.engine.dialect.name == "postgresql"
                              else "SELECT"), sent
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 1


def test_a_transactional_send_takes_three_statements(client, auth):
    body = {"to": "buyer@example.com", "template": "receipt", "data": RECEIPT,
            "category": "transactional"}
    assert client.post(MESSAGES, json=body, headers=auth).status_code == 202
    with statements() as sent:
        response = client.post(MESSAGES, json={**body, "to": "other@example.com"}, headers=auth)
    assert response.status_code == 202
    # Whether the console has a template of that name (its newest version would win over the
    # folder, and decides the kind of mail), the recipient's marks (the consent gate), then
    # the outbox row.
    assert len(sent) == 3, sent
    assert sent[0].startswith("SELECT") and "console_templates" in sent[0], sent
    assert sent[1].startswith("SELECT") and "suppressions" in sent[1], sent
    assert sent[2].startswith("INSERT INTO messages"), sent


def test_a_send_without_idempotency_key_runs_without_begin_and_commit_on_postgresql(
        client, auth):
    """Its one write (the outbox row) needs no transaction around it: on PostgreSQL the
    statements run in autocommit, two round trips less; the pool's connection is handed
    back in its usual mode. With an Idempotency-Key, record and row commit together."""
    body = {"to": "buyer@example.com", "template": "receipt", "data": RECEIPT,
            "category": "transactional"}
    assert client.post(MESSAGES, json=body, headers=auth).status_code == 202
    postgres = db.engine.dialect.name == "postgresql"
    for idempotency_key, alone in ((None, postgres), ("order-A-17", False)):
        db.session.commit()  # a served request starts with no transaction of the session
        with modes() as autocommitted:
            headers = {**auth, **({"Idempotency-Key": idempotency_key}
                                  if idempotency_key else {})}
            response = client.post(MESSAGES, headers=headers,
                                   json={**body, "to": f"{idempotency_key}@example.com"})
        assert response.status_code == 202
        assert autocommitted and set(autocommitted) == {alone}, autocommitted
        with db.engine.connect() as connection:  # the pool's connection, back in its mode
            assert not autocommit(connection.connection.driver_connection)
            assert connection.exec_driver_sql(
                "SELECT count(*) FROM messages WHERE public_id = ?" if not postgres else
                "SELECT count(*) FROM messages WHERE public_id = %s",
                (response.get_json()["id"],)).scalar() == 1


def test_a_refused_send_leaves_the_session_able_to_open_savepoints(client, auth, make_topic):
    """A send the gate refuses ends in its autocommit block: the next request of the same
    session (tests share one) runs in a transaction again, savepoints and all."""
    make_topic("news", double_opt_in=True)
    assert create(client, auth, "first@example.com", []) == 201  # the key is cached now
    db.session.commit()
    refused = client.post(MESSAGES, headers=auth, json={
        "to": "nobody@example.com", "template": "newsletter", "category": "promotional",
        "topic": "news", "data": {"headline": "Hi", "intro": "Hello"}})
    assert refused.status_code == 422
    # Queues the confirmation mail, whose consent check takes a savepoint.
    assert create(client, auth, "ann@example.com", ["news"]) == 201


def test_api_requests_open_no_cookie_session(app, client, auth, make_topic):
    # Opening (and saving) the signed-cookie session costs every request it is opened for.
    with app.test_request_context(CONTACTS, method="POST"):
        assert isinstance(session._get_current_object(), NullSession)
    with app.test_request_context("/subscribe"):
        assert not isinstance(session._get_current_object(), NullSession)
    make_topic("news", double_opt_in=False)
    client.set_cookie("session", "not-a-valid-signed-session")
    response = client.post(CONTACTS, headers=auth, json={"email": "ann@example.com",
                                                         "topics": ["news"]})
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers


def test_pages_still_get_their_session_cookie(client):
    # The signup page's form carries a CSRF token kept in the cookie session.
    response = client.get("/subscribe")
    assert response.status_code == 200
    assert "session=" in response.headers.get("Set-Cookie", "")
