"""The signup page, the confirmation link, and the expired-link page."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.messages.models import Message
from tests.pages.helpers import press_confirm, submit


@pytest.fixture
def topics(make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)  # even single opt-in: the form always confirms
    make_topic("internal", public=False)


def contact_json(client, auth, email="ann@example.com"):
    return client.get(f"/api/v1/contacts/{email}", headers=auth).get_json()


def confirm_path() -> str:
    message = db.session.scalar(select(Message).where(Message.category == "confirmation")
                                .order_by(Message.id.desc()))
    return message.data["confirm_url"].removeprefix("http://127.0.0.1:5000")



def signup(client, data: dict):
    """POST the signup form, and close the answer as a WSGI server does once it is sent:
    the signup's work (contact, confirmation mail) runs then."""
    response = submit(client, "/subscribe", data)
    response.get_data()
    response.close()
    return response

def test_the_form_offers_public_topics_with_labels_and_an_unticked_partner_box(client, topics):
    html = client.get("/subscribe").get_data(as_text=True)
    assert "News" in html and "Deals" in html and "Internal" not in html
    assert '<label for="email">' in html
    box = html[html.index('id="partner_sharing"') - 80: html.index('id="partner_sharing"') + 80]
    assert "checked" not in box
    assert 'name="website"' in html  # the honeypot


def test_signup_confirm_and_partner_sharing_only_after_confirmation(client, auth, topics):
    response = signup(client, {"email": "Ann@Example.com",
                                             "topics": ["news", "deals"],
                                             "partner_sharing": "y"})
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    contact = contact_json(client, auth)
    assert contact["subscriptions"] == {"news": "pending", "deals": "pending"}
    assert contact["partner_sharing"] is False  # not before the address confirms

    page = client.get(confirm_path())
    assert page.status_code == 200 and "Please confirm" in page.get_data(as_text=True)
    assert contact_json(client, auth)["partner_sharing"] is False  # a GET confirms nothing
    page = press_confirm(client, confirm_path(), share=True)
    assert page.status_code == 200 and "You are subscribed" in page.get_data(as_text=True)
    contact = contact_json(client, auth)
    assert contact["subscriptions"] == {"news": "subscribed", "deals": "subscribed"}
    assert contact["partner_sharing"] is True
    sources = {(e.subject, e.source) for e in db.session.scalars(select(ConsentEvent))}
    assert ("topic", "web_form") in sources and ("topic", "confirm") in sources
    assert ("partner_sharing", "confirm") in sources
    again = client.get(confirm_path())  # a second click is harmless: all is confirmed
    assert again.status_code == 200 and "You are subscribed" in again.get_data(as_text=True)


def test_the_answer_is_the_same_for_new_pending_and_subscribed(client, auth, topics):
    def answer(email):
        body = signup(client, {"email": email, "topics": ["news"]}).get_data(
            as_text=True)
        return body.replace(email, "ADDRESS")

    first = answer("new@example.com")
    pending = answer("new@example.com")
    press_confirm(client, confirm_path())
    subscribed = answer("new@example.com")
    assert first == pending == subscribed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"email": "", "topics": ["news"]}, "Enter your email address."),
        ({"email": "not-an-address", "topics": ["news"]}, "valid"),
        ({"email": "ann@example.com"}, "Choose at least one."),
        ({"email": "ann@example.com", "topics": ["internal"]}, "not a valid choice"),
    ],
)
def test_bad_input_shows_the_error_by_the_field_and_stores_nothing(client, topics, data, message):
    response = signup(client, data)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'class="error"' in html and message in html
    assert db.session.scalar(select(Message)) is None


def test_without_csrf_token_nothing_happens(client, topics):
    response = client.post("/subscribe", data={"email": "ann@example.com", "topics": ["news"]})
    assert response.status_code == 400
    assert db.session.scalar(select(Message)) is None


def test_a_filled_honeypot_gets_the_same_answer_and_nothing_is_stored(client, auth, topics):
    response = signup(client, {"email": "bot@example.com", "topics": ["news"],
                                             "website": "http://spam.example"})
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    assert contact_json(client, auth, "bot@example.com")["error"]["code"] == "contact_not_found"


def test_an_expired_link_offers_a_new_one(app, client, topics):
    signup(client, {"email": "slow@example.com", "topics": ["news"]})
    path = confirm_path()
    app.config["MAILER_CONFIRM_MAX_AGE"] = 0
    try:
        time.sleep(1.1)
        page = client.get(path)
        assert page.status_code == 410
        assert "expired" in page.get_data(as_text=True)
        token = path.rsplit("/", 1)[1]
        resent = submit(client, "/confirm/resend", {"token": token}, form_page=path)
        assert resent.status_code == 200
    finally:
        app.config["MAILER_CONFIRM_MAX_AGE"] = 7 * 24 * 3600
    new_path = confirm_path()
    assert new_path != path
    assert "You are subscribed" in press_confirm(client, new_path).get_data(as_text=True)


def test_a_forged_confirm_link_changes_nothing(client, topics):
    assert client.get("/confirm/not-a-token").status_code == 400


def test_the_signup_is_done_after_the_answer_has_gone_out(client, auth, topics):
    """So the answer's timing cannot tell a new address from a known one either."""
    response = submit(client, "/subscribe", {"email": "late@example.com", "topics": ["news"]})
    assert "Check your inbox" in response.get_data(as_text=True)
    assert contact_json(client, auth, "late@example.com")["error"]["code"] == "contact_not_found"
    response.close()
    assert contact_json(client, auth, "late@example.com")["subscriptions"] == {"news": "pending"}
    assert db.session.scalar(select(Message.template)) == "confirm_subscription"
