"""GET|POST /tell-a-friend, driven as a browser would: read the form's CSRF token, post it back."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from mailer.consent.models import ConsentEvent
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.referrals.models import Referral
from mailer.suppressions.models import Suppression
from tests.processes import run_with_limits

PAGE = "/tell-a-friend"
ITEM_URL = "http://127.0.0.1:5000/p/blue-guitar"
_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def form_data(**overrides) -> dict[str, str]:
    data = {"sender_name": "Ann", "sender_email": "ann@example.com",
            "recipient_email": "bob@example.org", "item_name": "Blue Guitar",
            "item_url": ITEM_URL, "note": "You will love it."}
    data.update(overrides)
    return data


def csrf_token(client) -> str:
    page = client.get(PAGE)
    assert page.status_code == 200
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


def submit(client, **overrides):
    """POST the form, and close the answer as a WSGI server does once it is sent: the
    referral's limits, gate and queueing run then."""
    response = client.post(PAGE, data={**form_data(**overrides), "csrf_token": csrf_token(client)})
    response.get_data()
    response.close()
    return response


def stored() -> dict[str, int]:
    db.session.rollback()
    return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
            for model in (Message, Referral, Suppression, Contact, ConsentEvent)}


NOTHING = {"messages": 0, "referrals": 0, "suppressions": 0, "contacts": 0, "consent_events": 0}


def error_after(html: str, field: str) -> str:
    """The error paragraph that follows the field's input, or ''."""
    match = re.search(
        rf'id="{field}"[^>]*>(?:[^<]*</textarea>)?\s*(?:<span class="hint"[^>]*>[^<]*</span>\s*)?'
        rf'<p class="error" id="{field}-error" role="alert">([^<]*)</p>', html)
    return unescape(match.group(1)) if match else ""


def test_the_form_is_labelled_and_prefilled_from_the_query(client):
    query = urlencode({"item_name": "Blue <Guitar>", "item_url": ITEM_URL})
    response = client.get(f"{PAGE}?{query}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for field, label in (("sender_name", "Your name"), ("sender_email", "Your email address"),
                         ("recipient_email", "Your friend&#39;s email address"),
                         ("item_name", "Item"), ("item_url", "Link to the item"),
                         ("note", "A note for your friend (optional)")):
        assert f'<label for="{field}">{label}</label>' in html, field
    assert 'value="Blue &lt;Guitar&gt;"' in html and "<Guitar>" not in html
    assert f'value="{ITEM_URL}"' in html
    assert 'maxlength="500"' in html
    assert _CSRF.search(html)
    honeypot = re.search(r'<input[^>]*name="website"[^>]*>', html).group(0)
    for attribute in ('tabindex="-1"', 'aria-hidden="true"', 'autocomplete="off"'):
        assert attribute in honeypot
    assert re.search(r'<div class="hp" aria-hidden="true" style="position:absolute;left:-10000px',
                     html)


def test_a_post_without_the_csrf_token_is_refused(client):
    response = client.post(PAGE, data=form_data())
    assert response.status_code == 400
    assert stored() == NOTHING


def test_a_good_post_queues_the_mail_and_thanks_without_naming_anyone(client):
    response = submit(client, note="<b>hi</b>")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Thank you" in html and "bob@example.org" not in html
    message = db.session.scalar(select(Message))
    assert (message.category, message.to_address) == ("referral", "bob@example.org")
    assert message.data == {"sender_name": "Ann", "item_name": "Blue Guitar",
                            "item_url": ITEM_URL, "note": "<b>hi</b>"}
    assert stored()["contacts"] == 0 and stored()["referrals"] == 1


def test_the_thank_you_page_is_the_same_whatever_happened(client):
    first = submit(client).get_data()
    dropped = submit(client, sender_email="carol@example.com").get_data()  # same friend
    bot = submit(client, website="http://spam.example", recipient_email="dave@example.org")
    assert bot.status_code == 200
    assert first == dropped == bot.get_data()
    assert stored()["messages"] == 1


def test_a_filled_honeypot_is_dropped_silently_even_with_bad_fields(client):
    response = submit(client, website="x", recipient_email="not an address")
    assert response.status_code == 200 and "Thank you" in response.get_data(as_text=True)
    assert stored() == NOTHING


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"recipient_email": "not an address"}, "recipient_email", "email address"),
        ({"recipient_email": "ANN@example.com"}, "recipient_email", "your own address"),
        ({"sender_email": ""}, "sender_email", "Enter your email address."),
        ({"sender_name": ""}, "sender_name", "Enter your name."),
        ({"item_url": "https://evil.example/p/1"}, "item_url", "Only links to our shop"),
        ({"item_url": "http://127.0.0.1:5000.evil.example/"}, "item_url",
         "Only links to our shop"),
        ({"note": "x" * 501}, "note", "At most 500 characters."),
        ({"note": "pay 4111 1111 1111 1111"}, "note", "card numbers"),
        ({"note": "see https://evil.example"}, "note", "Links cannot be sent"),
        ({"sender_name": "Win at http://evil.example/win"}, "sender_name",
         "Links cannot be sent in your name"),
    ],
)
def test_errors_are_shown_next_to_their_field_and_nothing_is_stored(client, overrides, field,
                                                                    message):
    response = submit(client, **overrides)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in error_after(html, field), html
    assert 'aria-invalid="true"' in html
    # What was typed is kept, so it can be corrected.
    assert 'value="Blue Guitar"' in html
    assert stored() == NOTHING


def test_a_link_in_the_item_name_is_shown_next_to_it(client):
    response = submit(client, item_name="Free prize www.evil.example")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Links cannot be sent in the item's name" in error_after(html, "item_name"), html
    assert stored() == NOTHING


def test_several_errors_show_at_once(client):
    html = submit(client, sender_name="", item_url="https://evil.example/").get_data(as_text=True)
    assert error_after(html, "sender_name") and error_after(html, "item_url")


_RATE_LIMIT_CHECK = """
config.MAILER_PAGE_RATE_LIMIT = "2 per minute"
config.WTF_CSRF_ENABLED = False
app = create_app(config)
client = app.test_client()
# The honeypot keeps the database out of it: only the limiter is under test.
posts = [client.post("/tell-a-friend", data={"website": "x"}).status_code for _ in range(3)]
print(json.dumps({"posts": posts, "get": client.get("/tell-a-friend").status_code}))
"""


def test_posts_are_rate_limited_per_client(tmp_path):
    outcome = run_with_limits(_RATE_LIMIT_CHECK, tmp_path / "r.db")
    assert outcome == {"posts": [200, 200, 429], "get": 200}
