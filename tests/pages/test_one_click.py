"""RFC 8058 one-click unsubscribe, as mail providers send it: no cookie, no CSRF token."""

from __future__ import annotations

import pytest
from werkzeug.test import Client

from mailer import addresses
from mailer.consent.gate import check
from mailer.messages.compose import unsubscribe_token
from mailer.messages.models import Category
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

BODY = "List-Unsubscribe=One-Click"


@pytest.fixture
def link(client, auth, make_topic):
    topic = make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", json={"email": "fan@example.com", "topics": ["news"]},
                headers=auth)
    return f"/unsubscribe/{unsubscribe_token(addresses.hash_of('fan@example.com'), topic.id)}"


def state(client, auth):
    contact = client.get("/api/v1/contacts/fan@example.com", headers=auth).get_json()
    return contact["subscriptions"]["news"]


def test_get_shows_one_button_and_changes_nothing(client, auth, link):
    for _ in range(3):  # link scanners fetch it, sometimes repeatedly
        page = client.get(link)
        assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count('type="submit"') == 1
    assert state(client, auth) == "subscribed"


def test_form_encoded_one_click_post_as_gmail_sends_it(app, auth, client, link):
    bare = Client(app)  # a fresh client: no cookie at all
    response = bare.post(link, data=BODY,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert state(client, auth) == "unsubscribed"
    again = bare.post(link, data=BODY,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.status_code == 200


def test_multipart_one_click_post(app, auth, client, link):
    boundary = "----b7d2"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            f"One-Click\r\n--{boundary}--\r\n")
    response = Client(app).post(
        link, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200
    assert state(client, auth) == "unsubscribed"


def test_the_page_can_leave_all_mail(client, auth, link):
    response = client.post(link, data={"List-Unsubscribe": "One-Click", "scope": "all",
                                       "from_page": "1"})
    assert response.status_code == 200
    assert Reason.LEFT in suppressions.marks(addresses.hash_of("fan@example.com"))


def test_the_link_still_works_after_erasure(app, client, auth, link, make_topic):
    client.delete("/api/v1/contacts/fan@example.com", headers=auth)
    assert Client(app).post(link, data=BODY, headers={
        "Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    address_hash = addresses.hash_of("fan@example.com")
    assert Reason.UNSUBSCRIBED in {m.reason for m in suppressions.suppressions_of(address_hash)}
    topic_id = suppressions.suppressions_of(address_hash)[-1].topic_id
    assert check(address_hash, Category.PROMOTIONAL, topic_id).reason in ("erased",
                                                                          "unsubscribed")


def test_a_forged_link_is_refused_and_changes_nothing(app, client, auth, link):
    response = Client(app).post(link[:-3] + "xyz", data=BODY, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert state(client, auth) == "subscribed"
