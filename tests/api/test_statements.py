"""How many SQL statements the API's busiest requests send (a budget each: `queries <= n`),
and that they need no session cookie.

Every statement is a round trip on PostgreSQL: these requests send what their work needs in
the request's session, and the budgets catch a change that adds a query per row or per
object. Each count is taken on the second request, after the API key is cached (as it is
under load). Runs on SQLite and PostgreSQL.
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


# One of them (since webhooks) the INSERT ... SELECT of the contact.subscribed event into the
# webhook outbox, written in the same transaction whether or not an endpoint wants it.
BUDGET_NEW_CONTACT = 5


def test_a_new_contact_with_a_topic_stays_within_its_budget(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    db.session.commit()  # a served request starts with no transaction of the session
    with statements() as sent:
        assert create(client, auth, "ann@example.com", ["news"]) == 201
    # The topics with the address's mark and contact id, then the contact, its
    # subscription and the consent event written.
    assert len(sent) <= BUDGET_NEW_CONTACT, sent


def test_a_new_contact_without_topics_stays_within_its_budget(client, auth):
    assert create(client, auth, "first@example.com", []) == 201
    db.session.commit()
    with statements() as sent:
        assert create(client, auth, "ann@example.com", []) == 201
    assert len(sent) <= 2, sent


def test_a_new_contact_of_a_double_opt_in_topic_commits_with_its_confirmation_mail(
        client, auth, make_topic):
    """Its confirmation mail is written in the transaction of the contact and its pending
    subscription: none without the other."""
    make_topic("news", double_opt_in=True)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    db.session.commit()
    with statements() as sent:
        assert create(client, auth, "ann@example.com", ["news"]) == 201
    # + the gate's two reads and the mail, in a savepoint (SAVEPOINT, RELEASE).
    assert len(sent) <= BUDGET_NEW_CONTACT + 5, sent


def test_an_unknown_topic_is_found_out_before_anything_is_written(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    assert create(client, auth, "first@example.com", ["news"]) == 201
    with statements() as sent:
        assert create(client, auth, "ann@example.com", ["news", "nope"]) == 422
    assert len(sent) <= 1, sent
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 1


def test_a_transactional_send_stays_within_its_budget(client, auth):
    body = {"to": "buyer@example.com", "template": "receipt", "data": RECEIPT,
            "category": "transactional"}
    assert client.post(MESSAGES, json=body, headers=auth).status_code == 202
    with statements() as sent:
        response = client.post(MESSAGES, json={**body, "to": "other@example.com"}, headers=auth)
    assert response.status_code == 202
    # Whether the console has a template of that name (its newest version would win over the
    # folder, and decides the kind of mail), the recipient's marks (the consent gate), then
    # the outbox row.
    assert len(sent) <= 3, sent


def test_a_refused_send_leaves_the_session_able_to_open_savepoints(client, auth, make_topic):
    """A send the gate refuses leaves the session usable: the next request of the same
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
