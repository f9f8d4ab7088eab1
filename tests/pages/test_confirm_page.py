"""The seams around double opt-in and partner sharing (issue 15), tried from outside.

Each test first does what an attacker (or a mail security scanner) does, through real mail
delivered by a worker to aiosmtpd, then shows the owner's own action is what counts:
- a GET of the mailed confirmation link confirms nothing and grants nothing;
- partner sharing asked for by the signup form, the API or the preferences link is granted
  only on the confirmation page, its box unticked; withdrawing is immediate;
- "unsubscribe from everything" (preferences, the unsubscribe page's "all") withdraws it.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from mailer import addresses, tokens
from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.messages.compose import preferences_token, unsubscribe_token
from tests.delivery.helpers import run_worker_until_idle
from tests.pages.helpers import submit
from tests.smtp_server import ScriptedSmtpServer

ANN = "ann@example.com"


@pytest.fixture
def smtp() -> Iterator[ScriptedSmtpServer]:
    with ScriptedSmtpServer() as server:
        yield server


@pytest.fixture
def topics(make_topic):
    return {"news": make_topic("news", double_opt_in=True),
            "deals": make_topic("deals", double_opt_in=False)}


def deliver(app, smtp) -> None:
    """Hand everything queued to the real SMTP server through a real worker."""
    db.session.commit()
    run_worker_until_idle(app, smtp.url)


def link_in_last_mail(smtp, pattern: str, to: str = ANN) -> str:
    """The path of the first link matching `pattern` in the newest mail to `to`."""
    mails = [m for m in smtp.messages if to in m.rcpt_tos]
    assert mails, f"no mail to {to}"
    message = email.message_from_bytes(mails[-1].data, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"https?://\S+{pattern}\S+", text)
    assert found, text
    return urlsplit(found.group(0)).path


def contact(client, auth) -> dict:
    return client.get(f"/api/v1/contacts/{ANN}", headers=auth).get_json()


class Browser:
    """A browser of its own: its own cookies, and each request in an app context of its own,
    as in a server. (Test requests otherwise share the test's app context, and with it
    Flask's `g`, where Flask-WTF keeps the CSRF token of the request's session.)"""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()

    def get(self, path: str, **kwargs):
        with self.app.app_context():
            return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs):
        with self.app.app_context():
            return self.client.post(path, **kwargs)


def scanner(app) -> Browser:
    """A mail security scanner: no cookies of the person, follows every link with a GET."""
    return Browser(app)


def sharing_box(html: str) -> str:
    start = html.index('id="partner_sharing"')
    return html[html.rindex("<input", 0, start): html.index(">", start) + 1]


def test_a_scanner_following_the_link_confirms_nothing_and_grants_nothing(
        app, client, auth, topics, smtp):
    # Someone types Ann's address into the signup form and ticks the sharing box.
    response = submit(client, "/subscribe", {"email": ANN, "topics": ["news"],
                                              "partner_sharing": "y"})
    assert response.status_code == 200
    response.close()  # the signup's work runs once the answer has gone out
    deliver(app, smtp)
    link = link_in_last_mail(smtp, "/confirm/")

    for _ in range(3):  # scanners fetch links, sometimes again and again
        page = scanner(app).get(link)
        assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "News" in html and html.count('type="submit"') == 1
    assert "checked" not in sharing_box(html)  # the sharing box starts unticked
    assert contact(client, auth)["subscriptions"] == {"news": "pending"}
    assert contact(client, auth)["partner_sharing"] is False

    # A POST without the page's CSRF token (a scanner that submits forms blindly, or a page
    # opened in another browser) confirms nothing either: the page comes back, fresh.
    blind = scanner(app).post(link, data={"partner_sharing": "y"})
    assert blind.status_code == 400 and "press the button again" in blind.get_data(as_text=True)
    assert contact(client, auth)["subscriptions"] == {"news": "pending"}

    # Ann presses the button without ticking the box: subscribed, nothing shared.
    person = Browser(app)
    confirmed = submit(person, link, {})
    assert confirmed.status_code == 200
    assert "You are subscribed" in confirmed.get_data(as_text=True)
    assert contact(client, auth)["subscriptions"] == {"news": "subscribed"}
    assert contact(client, auth)["partner_sharing"] is False


def test_the_owner_grants_sharing_on_the_page_and_a_second_press_is_harmless(
        app, client, auth, topics, smtp):
    submit(client, "/subscribe", {"email": ANN, "topics": ["news"],
                                  "partner_sharing": "y"}).close()
    deliver(app, smtp)
    link = link_in_last_mail(smtp, "/confirm/")
    person = Browser(app)
    page = person.get(link)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      page.get_data(as_text=True)).group(1)
    first = person.post(link, data={"csrf_token": token, "partner_sharing": "y"})
    assert first.status_code == 200 and "share your address" in first.get_data(as_text=True)
    assert contact(client, auth)["partner_sharing"] is True
    # Pressing again (back button, double tap) changes nothing more.
    assert person.post(link, data={"csrf_token": token, "partner_sharing": "y"}
                       ).status_code == 200
    grants = db.session.scalars(select(ConsentEvent.state).where(
        ConsentEvent.subject == "partner_sharing")).all()
    assert grants == ["granted"]


def test_a_link_mailed_before_the_upgrade_opens_the_page_and_confirms_on_its_button(
        app, client, auth, topics):
    """Links mailed by the old code (which confirmed on GET) carry the same payload: made
    here the old way, by hand, with the sharing ask of a ticked signup box."""
    client.post("/api/v1/contacts", json={"email": ANN, "topics": ["news"]}, headers=auth)
    news = topics["news"]
    old_token = tokens.sign(tokens.Purpose.CONFIRM,
                            {"h": addresses.hash_of(ANN), "t": [news.id], "p": 1})
    link = f"/confirm/{old_token}"
    page = scanner(app).get(link)
    assert page.status_code == 200 and "Please confirm" in page.get_data(as_text=True)
    assert "checked" not in sharing_box(page.get_data(as_text=True))
    assert contact(client, auth)["subscriptions"] == {"news": "pending"}

    person = Browser(app)
    done = submit(person, link, {})
    assert "You are subscribed" in done.get_data(as_text=True)
    assert contact(client, auth)["subscriptions"] == {"news": "subscribed"}
    assert contact(client, auth)["partner_sharing"] is False  # the box was not ticked


def test_the_api_only_asks_for_sharing_and_the_owner_grants_it(app, client, auth, topics, smtp):
    answer = client.post("/api/v1/contacts", json={"email": ANN, "topics": ["deals"],
                                                   "partner_sharing": True}, headers=auth)
    assert answer.status_code == 201
    assert answer.get_json()["partner_sharing"] is False
    assert contact(client, auth)["partner_sharing"] is False
    deliver(app, smtp)
    link = link_in_last_mail(smtp, "/confirm/")
    assert scanner(app).get(link).status_code == 200
    assert contact(client, auth)["partner_sharing"] is False
    submit(Browser(app), link, {"partner_sharing": "y"})
    assert contact(client, auth)["partner_sharing"] is True
    # Withdrawal through the API is immediate.
    patched = client.patch(f"/api/v1/contacts/{ANN}", json={"partner_sharing": False},
                           headers=auth)
    assert patched.get_json()["partner_sharing"] is False


def test_the_preferences_link_never_grants_sharing_at_once(app, client, auth, topics, smtp):
    client.post("/api/v1/contacts", json={"email": ANN, "topics": ["deals"]}, headers=auth)
    preferences = f"/preferences/{preferences_token(addresses.hash_of(ANN))}"
    # Whoever holds a forwarded newsletter ticks the sharing box on Ann's preferences.
    saved = submit(Browser(app), preferences, {"topics": ["deals"],
                                                    "partner_sharing": "y", "action": "save"})
    assert saved.status_code == 200
    assert contact(client, auth)["partner_sharing"] is False
    html = Browser(app).get(preferences).get_data(as_text=True)
    assert "checked" not in sharing_box(html)

    # The ask went to Ann's own mailbox; only she can grant it there.
    deliver(app, smtp)
    link = link_in_last_mail(smtp, "/confirm/")
    page = scanner(app).get(link)
    assert "partners" in page.get_data(as_text=True)
    assert contact(client, auth)["partner_sharing"] is False
    submit(Browser(app), link, {"partner_sharing": "y"})
    assert contact(client, auth)["partner_sharing"] is True

    # Unticking on the preferences page withdraws at once.
    submit(Browser(app), preferences, {"topics": ["deals"], "action": "save"})
    assert contact(client, auth)["partner_sharing"] is False


def _sharing_contact(app, client, auth, smtp) -> None:
    """Ann, subscribed to deals, who granted partner sharing herself."""
    client.post("/api/v1/contacts", json={"email": ANN, "topics": ["deals"],
                                          "partner_sharing": True}, headers=auth)
    deliver(app, smtp)
    submit(Browser(app), link_in_last_mail(smtp, "/confirm/"), {"partner_sharing": "y"})
    assert contact(client, auth)["partner_sharing"] is True


def test_leaving_everything_on_the_preferences_page_withdraws_sharing(
        app, client, auth, topics, smtp):
    _sharing_contact(app, client, auth, smtp)
    preferences = f"/preferences/{preferences_token(addresses.hash_of(ANN))}"
    left = submit(Browser(app), preferences, {"action": "leave"})
    assert left.status_code == 200
    assert contact(client, auth)["partner_sharing"] is False
    assert set(contact(client, auth)["subscriptions"].values()) == {"unsubscribed"}


@pytest.mark.parametrize("how", ["page", "one-click"])
def test_unsubscribing_from_all_mail_withdraws_sharing(app, client, auth, topics, smtp, how):
    deals_id = topics["deals"].id
    _sharing_contact(app, client, auth, smtp)
    link = f"/unsubscribe/{unsubscribe_token(addresses.hash_of(ANN), deals_id)}"
    body = {"List-Unsubscribe": "One-Click", "scope": "all"}
    if how == "page":
        body["from_page"] = "1"
    assert Browser(app).post(link, data=body).status_code == 200
    assert contact(client, auth)["partner_sharing"] is False
    withdrawn = db.session.scalars(select(ConsentEvent.state).where(
        ConsentEvent.subject == "partner_sharing").order_by(ConsentEvent.id)).all()
    assert withdrawn == ["granted", "withdrawn"]
