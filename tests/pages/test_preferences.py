"""The preference center and unsubscribing by typed address."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.extensions import db
from mailer.messages.compose import preferences_token
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.pages.helpers import submit


@pytest.fixture
def ann(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    make_topic("staff", double_opt_in=False, public=False)
    client.post("/api/v1/contacts", json={"email": "ann@example.com", "topics": ["deals", "staff"],
                                          "partner_sharing": True}, headers=auth)
    return f"/preferences/{preferences_token(addresses.hash_of('ann@example.com'))}"


def subscriptions(client, auth):
    return client.get("/api/v1/contacts/ann@example.com", headers=auth).get_json()


def test_the_page_shows_public_topics_and_the_contacts_own(client, ann):
    html = client.get(ann).get_data(as_text=True)
    assert "News" in html and "Deals" in html and "Staff" in html
    assert re.search(r'<input checked[^>]*value="deals"', html)
    assert not re.search(r'<input checked[^>]*value="news"', html)


def test_changing_topics_and_partner_sharing(client, auth, ann):
    response = submit(client, ann, {"topics": ["news", "staff"], "action": "save"})
    assert response.status_code == 200
    contact = subscriptions(client, auth)
    # Leaving is immediate; joining a double opt-in topic asks the address to confirm.
    assert contact["subscriptions"] == {"deals": "unsubscribed", "staff": "subscribed",
                                        "news": "pending"}
    assert contact["partner_sharing"] is False
    assert "confirm" in response.get_data(as_text=True)
    message = db.session.scalar(select(Message).where(Message.category == "confirmation"))
    assert message is not None


def test_unsubscribe_from_everything(client, auth, ann):
    response = submit(client, ann, {"action": "leave"})
    assert response.status_code == 200
    contact = subscriptions(client, auth)
    assert set(contact["subscriptions"].values()) == {"unsubscribed"}
    assert Reason.LEFT in suppressions.marks(addresses.hash_of("ann@example.com"))


def test_a_forged_token_shows_nothing(client, ann):
    assert client.get("/preferences/forged").status_code == 400


def test_an_erased_address_is_told_nothing_is_held(client, auth, ann):
    client.delete("/api/v1/contacts/ann@example.com", headers=auth)
    assert "no subscriptions" in client.get(ann).get_data(as_text=True)


def test_unsubscribe_by_address_never_reveals_whether_it_is_known(client, ann):
    known = submit(client, "/unsubscribe", {"email": "ann@example.com"})
    unknown = submit(client, "/unsubscribe", {"email": "bob@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert (known.get_data(as_text=True).replace("ann@example.com", "X")
            == unknown.get_data(as_text=True).replace("bob@example.com", "X"))
    # The lookup and the mail come after the answer has gone out (the WSGI server closes
    # the response then), so not even the answer's timing depends on the address.
    assert db.session.scalar(select(Message).where(Message.template == "preference_link")) is None
    known.close()
    unknown.close()
    db.session.remove()
    sent = db.session.scalars(select(Message).where(Message.template == "preference_link")).all()
    assert [m.to_address for m in sent] == ["ann@example.com"]
    assert sent[0].data["preferences_url"].endswith(ann)


def test_unsubscribe_by_address_with_a_bad_address_shows_the_error(client):
    response = submit(client, "/unsubscribe", {"email": "nope"})
    assert response.status_code == 422
    assert 'class="error"' in response.get_data(as_text=True)
