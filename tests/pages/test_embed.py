"""The embeddable signup form: its snippet, and its POST to /subscribe from other origins."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.tokens import Purpose, sign

SHOP = "https://shop.example"
OTHER = "https://evil.example"
TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


@pytest.fixture
def topics(app, make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    make_topic("internal", public=False)
    saved = app.config["MAILER_EMBED_ORIGINS"]
    app.config["MAILER_EMBED_ORIGINS"] = [SHOP]
    yield
    app.config["MAILER_EMBED_ORIGINS"] = saved


def snippet(client, topics: str = "news,deals") -> str:
    response = client.get(f"/embed/subscribe?topics={topics}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def form_token(client, topics: str = "news,deals") -> str:
    return TOKEN.search(snippet(client, topics)).group(1)


def post(client, data: dict, *, origin: str | None = SHOP, json: bool = False, **headers):
    """POST /subscribe as a page on `origin` would, then close the answer as a WSGI server
    does (the signup's work runs then)."""
    if origin is not None:
        headers["Origin"] = origin
    if json:
        headers["Accept"] = "application/json"
    response = client.post("/subscribe", data=data, headers=headers)
    response.get_data()
    response.close()
    return response


def contacts() -> int:
    return db.session.scalar(select(func.count()).select_from(Contact))


def confirmations() -> int:
    return db.session.scalar(select(func.count()).select_from(Message).where(
        Message.category == "confirmation"))


def test_the_snippet_is_one_form_posting_to_the_absolute_subscribe_url(client, topics):
    html = snippet(client)
    assert html.count("<form") == 1
    assert 'action="http://127.0.0.1:5000/subscribe"' in html and 'method="post"' in html
    assert 'type="email"' in html and 'name="email"' in html
    assert 'value="news"' in html and 'value="deals"' in html and "internal" not in html
    assert 'name="website"' in html  # the honeypot
    assert "csrf_token" not in html and TOKEN.search(html)
    assert "<html" not in html  # a fragment
    response = client.get("/embed/subscribe?topics=news")
    assert response.headers["Cache-Control"] == "no-store"
    assert 'type="hidden" name="topics" value="news"' in response.get_data(as_text=True)


def test_only_public_topics_can_be_chosen(client, topics):
    assert client.get("/embed/subscribe?topics=internal").status_code == 404
    assert client.get("/embed/subscribe?topics=nope").status_code == 404
    everything = snippet(client, "")
    assert 'value="news"' in everything and 'value="deals"' in everything


def test_a_listed_origin_signs_up_without_a_session_cookie(client, auth, topics):
    token = form_token(client)
    client.delete_cookie("session")
    response = post(client, {"email": "Ann@Example.com", "topics": ["news", "deals"],
                             "form_token": token})
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    contact = client.get("/api/v1/contacts/ann@example.com", headers=auth).get_json()
    # Always confirmed by the address itself, as on the page.
    assert contact["subscriptions"] == {"news": "pending", "deals": "pending"}
    assert confirmations() == 1


def test_fetch_gets_json_with_cors_for_that_origin_only(client, topics):
    token = form_token(client, "news")
    response = post(client, {"email": "bob@example.com", "topics": "news",
                             "form_token": token}, json=True)
    assert response.status_code == 200
    assert response.get_json()["status"] == "check_inbox"
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    bad = post(client, {"email": "not an address", "topics": "news", "form_token": token},
               json=True)
    assert bad.status_code == 422
    assert bad.get_json()["error"]["fields"]["email"]
    assert bad.headers["Access-Control-Allow-Origin"] == SHOP


def test_the_preflight_answers_listed_origins_only(client, topics):
    allowed = client.options("/subscribe", headers={
        "Origin": SHOP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in allowed.headers["Access-Control-Allow-Headers"]
    refused = client.options("/subscribe", headers={
        "Origin": OTHER, "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_a_json_body_works_too(client, auth, topics):
    token = form_token(client, "deals")
    response = client.post("/subscribe", json={"email": "cy@example.com", "topics": ["deals"],
                                               "form_token": token},
                           headers={"Origin": SHOP, "Accept": "application/json"})
    response.get_data()
    response.close()
    assert response.status_code == 200
    assert client.get("/api/v1/contacts/cy@example.com", headers=auth).status_code == 200


def test_any_other_origin_is_refused_and_nothing_changes(client, topics):
    token = form_token(client)
    for origin in (OTHER, "null", "http://shop.example", "https://shop.example:8443"):
        response = post(client, {"email": "eve@example.com", "topics": "news",
                                 "form_token": token}, origin=origin, json=True)
        assert response.status_code == 403, origin
        assert "Access-Control-Allow-Origin" not in response.headers
    # A Referer tells the origin when a browser sends no Origin.
    response = post(client, {"email": "eve@example.com", "topics": "news", "form_token": token},
                    origin=None, Referer=f"{OTHER}/product/1")
    assert response.status_code == 403
    assert contacts() == 0 and confirmations() == 0


def test_a_token_is_needed_and_says_which_topics(client, topics):
    no_token = post(client, {"email": "dan@example.com", "topics": "news"}, json=True)
    assert no_token.status_code == 400 and no_token.get_json()["error"]["code"] == "form_invalid"
    forged = post(client, {"email": "dan@example.com", "topics": "news",
                           "form_token": "x" + form_token(client)[1:]}, json=True)
    assert forged.status_code == 400
    # A confirm token (another purpose) is no form token.
    other_purpose = sign(Purpose.CONFIRM, {"topics": ["news"]})
    assert post(client, {"email": "dan@example.com", "topics": "news",
                         "form_token": other_purpose}, json=True).status_code == 400
    # A form offering news cannot sign up for deals, nor for a topic that is not public.
    news_only = form_token(client, "news")
    for topic in ("deals", "internal"):
        wrong = post(client, {"email": "dan@example.com", "topics": topic,
                              "form_token": news_only}, json=True)
        assert wrong.status_code == 422 and "topics" in wrong.get_json()["error"]["fields"]
    assert contacts() == 0


def test_an_old_form_ends_on_the_services_own_page_with_what_was_typed(app, client, topics):
    old = sign(Purpose.EMBED_FORM, {"topics": ["news"]})
    app.config["MAILER_EMBED_FORM_MAX_AGE"] = -1  # every token is too old
    try:
        page = post(client, {"email": "old@example.com", "topics": "news", "form_token": old})
        script = post(client, {"email": "old@example.com", "topics": "news", "form_token": old},
                      json=True)
    finally:
        app.config["MAILER_EMBED_FORM_MAX_AGE"] = 7 * 24 * 3600
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "too old" in html and 'value="old@example.com"' in html and "csrf_token" in html
    assert script.get_json()["error"]["code"] == "form_expired"
    assert contacts() == 0


def test_the_honeypot_gets_the_same_answer_and_nothing_is_done(client, topics):
    token = form_token(client)
    response = post(client, {"email": "bot@example.com", "topics": "news", "form_token": token,
                             "website": "http://spam.example"})
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    assert contacts() == 0


def test_the_per_address_confirmation_cap_holds(client, topics):
    token = form_token(client, "news")
    for _ in range(5):
        assert post(client, {"email": "flood@example.com", "topics": "news",
                             "form_token": token}).status_code == 200
    accepted = db.session.scalar(select(func.count()).select_from(Message).where(
        Message.category == "confirmation", Message.status != "suppressed"))
    assert accepted == 3  # CONSENT.md: at most 3 confirmation mails a day to one address


def test_the_pages_own_form_with_origin_null_is_the_page(client, topics):
    # The service's pages send no referrer; browsers then send `Origin: null` with a POST.
    from tests.pages.helpers import csrf_token

    token = csrf_token(client, "/subscribe")
    response = post(client, {"email": "own@example.com", "topics": "news",
                             "csrf_token": token}, origin="null")
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    assert contacts() == 1


def test_the_pages_own_form_still_needs_its_csrf_token(client, topics):
    response = client.post("/subscribe", data={"email": "ann@example.com", "topics": "news"})
    assert response.status_code == 400
    own = client.post("/subscribe", data={"email": "ann@example.com", "topics": "news"},
                      headers={"Origin": "http://localhost"})
    assert own.status_code == 400  # the service's own origin: the CSRF token applies
    assert contacts() == 0


_LIMITS = """
import re
import flask_migrate
from mailer.topics.services import create_topic
from mailer.extensions import db

config.MAILER_PAGE_RATE_LIMIT = "2 per minute"
config.MAILER_EMBED_ORIGINS = ["https://shop.example"]
app = create_app(config)
with app.app_context():
    flask_migrate.upgrade()
    create_topic("news", "News", "", True, True)
    db.session.commit()
client = app.test_client()
html = client.get("/embed/subscribe?topics=news").get_data(as_text=True)
token = re.search(r'name="form_token" value="([^"]+)"', html).group(1)
answers = []
for n in range(3):
    response = client.post("/subscribe", data={"email": f"r{n}@example.com", "topics": "news",
                           "form_token": token},
                           headers={"Origin": "https://shop.example",
                                    "Accept": "application/json"})
    answers.append([response.status_code,
                    response.headers.get("Access-Control-Allow-Origin")])
# The page's own form counts against the same per-client limit.
page = client.post("/subscribe", data={"email": "p@example.com", "topics": "news"})
print(json.dumps({"embed": answers, "page": page.status_code}))
"""


def test_the_same_per_client_limit_as_the_page(tmp_path):
    from tests.processes import run_with_limits

    outcome = run_with_limits(_LIMITS, tmp_path / "limits.db")
    shop = "https://shop.example"
    assert outcome == {"embed": [[200, shop], [200, shop], [429, shop]], "page": 429}


def test_embed_origins_are_read_as_browsers_send_them():
    from config import ConfigError, TestConfig

    config = TestConfig.from_env({"MAILER_EMBED_ORIGINS":
                                  "https://Shop.Example:443/, http://localhost:8080,"})
    assert config.MAILER_EMBED_ORIGINS == ["https://shop.example", "http://localhost:8080"]
    assert TestConfig.from_env({}).MAILER_EMBED_ORIGINS == []
    for bad in ("shop.example", "https://shop.example/signup", "ftp://shop.example"):
        with pytest.raises(ConfigError, match="MAILER_EMBED_ORIGINS"):
            TestConfig.from_env({"MAILER_EMBED_ORIGINS": bad})
