"""The marketers' console, driven as a browser without JavaScript would drive it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.admin import services as admin
from mailer.admin.models import AdminUser
from mailer.campaigns import scheduler
from mailer.campaigns import services as campaigns
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.pages.helpers import csrf_token
from tests.processes import run_flask, run_with_limits

EMAIL = "marketer@shop.example"
PASSWORD = "a long enough passphrase"
NEWS = {"headline": "Winter sale", "intro": "Pianos half price."}


@pytest.fixture
def user() -> AdminUser:
    made = admin.create_user(EMAIL, PASSWORD)
    db.session.commit()
    return made


def log_in(client, email: str = EMAIL, password: str = PASSWORD, next_: str | None = None):
    path = "/admin/login" + (f"?next={next_}" if next_ else "")
    token = csrf_token(client, "/admin/login")
    return client.post(path, data={"email": email, "password": password, "csrf_token": token})


@pytest.fixture
def console(client, user):
    """A test client logged in to the console."""
    assert log_in(client).status_code == 302
    return client


def post(client, path: str, data: dict | None = None, *, form_page: str):
    """POST `data` with the CSRF token of the page at `form_page`, as the page's form would."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, form_page)})


def draft(topic: str = "news", **data) -> str:
    """A draft campaign's public id."""
    made = campaigns.create("Winter", topic, "newsletter", {**NEWS, **data}, None)
    db.session.commit()
    return made.public_id


def page_of(campaign: str) -> str:
    return f"/admin/campaigns/{campaign}"


def fresh() -> None:
    """Read what the requests committed. (The suite's app context, and so the session and
    Flask-Login's cached user, is shared by the test and its requests: expire, not remove.)"""
    db.session.expire_all()


def flashed(client, path: str) -> str:
    return client.get(path).get_data(as_text=True)


# -- users and login -------------------------------------------------------------------------

def test_create_user_reads_the_password_from_stdin_and_stores_only_an_argon2_hash(app, client):
    result = run_flask(app, "mailer", "create-user", "Ann@Shop.Example",
                       stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    row = db.session.scalar(select(AdminUser))
    assert row.email == "ann@shop.example"
    assert row.password_hash.startswith("$argon2id$")
    assert "correct horse battery" not in row.password_hash
    assert "correct horse battery" not in result.stdout + result.stderr
    response = log_in(client, "ann@shop.example", "correct horse battery")
    assert response.status_code == 302


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("ann@shop.example",), "too short\n", "at least 12 characters"),
    (("ann@shop.example",), "\n", "at least 12 characters"),
    (("not an address",), "correct horse battery\n", "email address"),
])
def test_create_user_refuses_weak_passwords_and_bad_addresses(app, args, stdin, message):
    result = run_flask(app, "mailer", "create-user", *args, stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr
    assert db.session.scalar(select(AdminUser)) is None


def test_create_user_refuses_a_duplicate_whatever_its_case(app, user):
    result = run_flask(app, "mailer", "create-user", EMAIL.upper(),
                       stdin="another long password\n")
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert len(db.session.scalars(select(AdminUser)).all()) == 1


def _login_error(response) -> str:
    match = re.search(r'<p class="error-box" role="alert">([^<]+)</p>',
                      response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return match.group(1)


def test_unknown_user_and_wrong_password_get_the_same_answer(client, user):
    unknown = log_in(client, "nobody@shop.example", PASSWORD)
    wrong = log_in(client, EMAIL, "not the password at all")
    assert unknown.status_code == wrong.status_code == 422
    assert _login_error(unknown) == _login_error(wrong)
    assert client.get("/admin/").status_code == 302


def test_login_opens_the_console_and_logout_closes_it(client, user):
    response = log_in(client, "  Marketer@Shop.Example ")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200 and "Overview" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    fresh()
    assert db.session.get(AdminUser, user.id).last_login_at is not None

    assert post(client, "/admin/logout", form_page="/admin/").status_code == 302
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(("asked", "then"), [
    ("/admin/templates", "/admin/templates"),
    ("https://evil.example/admin/", "/admin/"),
    ("//evil.example/admin/", "/admin/"),
    ("/subscribe", "/admin/"),
])
def test_login_goes_on_to_the_page_asked_for_but_never_off_the_console(client, user, asked,
                                                                       then):
    assert log_in(client, next_=asked).headers["Location"] == then


@pytest.mark.parametrize("path", [
    "/admin/", "/admin/templates", "/admin/templates/newsletter", "/admin/campaigns",
    "/admin/campaigns/new", "/admin/campaigns/abc", "/admin/suppressions",
])
def test_every_page_but_the_login_needs_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")


def test_posts_and_the_progress_feed_need_a_login_too(client, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    # A valid CSRF token (the login page's) without a login: sent to the login, nothing done.
    response = post(client, f"{page_of(campaign)}/cancel", form_page="/admin/login")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")
    fresh()
    assert campaigns.get(campaign).status == "draft"
    progress = client.get(f"{page_of(campaign)}/progress")
    assert progress.status_code == 401
    assert progress.get_json()["error"]["code"] == "unauthorized"


def test_a_post_without_its_csrf_token_is_refused(client, console, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    for path, data in [
        ("/admin/campaigns/new", {"name": "x", "topic": "news", "template": "newsletter"}),
        (f"{page_of(campaign)}/cancel", {}),
        ("/admin/suppressions", {"email": "a@example.com"}),
        ("/admin/logout", {}),
    ]:
        assert console.post(path, data=data).status_code == 400, path
    fresh()
    assert campaigns.get(campaign).status == "draft"


def test_the_login_form_needs_its_csrf_token(client, user):
    response = client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400


_RATE_LIMIT_CHECK = """
from mailer.extensions import db

config.WTF_CSRF_ENABLED = False
app = create_app(config)
with app.app_context():
    db.create_all()
client = app.test_client()
data = {"email": "nobody@shop.example", "password": "a wrong password"}
posts = [client.post("/admin/login", data=data).status_code for _ in range(6)]
# Another client, for another account (the account's own limit is tests/test_client_addresses).
other = client.post("/admin/login", data={**data, "email": "someone@shop.example"},
                    environ_base={"REMOTE_ADDR": "192.0.2.7"})
print(json.dumps({"posts": posts, "get": client.get("/admin/login").status_code,
                  "other_client": other.status_code}))
"""


def test_login_attempts_are_limited_per_client(tmp_path):
    outcome = run_with_limits(_RATE_LIMIT_CHECK, tmp_path / "r.db")
    assert outcome == {"posts": [422] * 5 + [429], "get": 200, "other_client": 422}


# -- overview ----------------------------------------------------------------------------------

def test_the_overview_counts_subscribers_per_topic_and_shows_recent_campaigns(console,
                                                                                make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("club", double_opt_in=True)
    make_topic("empty")
    for email in ("a@example.com", "b@example.com"):
        contacts.upsert(email, topics=["news"])
    contacts.upsert("c@example.com", topics=["club"])
    db.session.commit()
    draft()
    html = console.get("/admin/").get_data(as_text=True)
    rows = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"<td><code>(\w+)</code></td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>",
        html)}
    assert rows == {"news": (2, 0), "club": (0, 1), "empty": (0, 0)}
    assert "Winter" in html and "draft" in html
    assert "@example.com" not in html


# -- templates ---------------------------------------------------------------------------------

def test_the_templates_page_lists_sendable_templates_only(console):
    html = console.get("/admin/templates").get_data(as_text=True)
    assert "/admin/templates/newsletter" in html and "/admin/templates/receipt" in html
    assert "_footer" not in html


def test_a_template_preview_renders_sample_data_into_subject_html_and_text(console):
    page = console.get("/admin/templates/newsletter")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    # The template.toml's examples, at desktop and phone widths, with the real footer.
    assert "New arrivals this week" in html and "sandbox" in html and "srcdoc=" in html
    assert "Phone (390 px)" in html and "/unsubscribe/" in html
    edited = post(console, "/admin/templates/newsletter", {"data": json.dumps(
        {"headline": "Spring <b>sale</b>", "intro": "Strings", "items": [{"name": "Harp"}]})},
        form_page="/admin/templates/newsletter")
    html = edited.get_data(as_text=True)
    assert edited.status_code == 200
    assert '<span class="subject">Spring &lt;b&gt;sale&lt;/b&gt;</span>' in html
    assert "- Harp" in html  # the text part


@pytest.mark.parametrize(("data", "message"), [
    ('{"headline": ', "Not valid JSON"),
    ("[1, 2]", "A JSON object is needed"),
    ('{"intro": "no headline"}', "needs data it was not given"),
])
def test_a_template_preview_shows_bad_data_as_a_message_not_a_server_error(console, data,
                                                                           message):
    response = post(console, "/admin/templates/newsletter", {"data": data},
                    form_page="/admin/templates/newsletter")
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)


def test_an_unknown_template_is_404(console):
    assert console.get("/admin/templates/nothing-here").status_code == 404


# -- campaigns ---------------------------------------------------------------------------------

def compose(console, action: str, **fields):
    data = {"name": "Winter", "topic": "news", "template": "newsletter",
            "var_headline": NEWS["headline"], "var_intro": NEWS["intro"], "action": action,
            **fields}
    return post(console, "/admin/campaigns/new", data,
                form_page="/admin/campaigns/new?template=newsletter")


def test_compose_previews_then_creates_a_draft(console, make_topic):
    make_topic("news", double_opt_in=False)
    preview = compose(console, "preview")
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200
    assert '<span class="subject">Winter sale</span>' in html
    assert "Pianos half price." in html and "/unsubscribe/" in html  # the footer is there
    assert 'value="create"' in html
    assert db.session.scalar(select(Campaign)) is None  # a preview stores nothing

    created = compose(console, "create", **{"segment-0-attribute": "country",
                                            "segment-0-value": "DE"})
    assert created.status_code == 302
    campaign = db.session.scalar(select(Campaign))
    assert created.headers["Location"] == page_of(campaign.public_id)
    assert (campaign.name, campaign.topic.slug, campaign.template, campaign.status) == (
        "Winter", "news", "newsletter", "draft")
    assert campaign.data == NEWS and campaign.segment == {"attributes": {"country": "DE"}}
    page = console.get(page_of(campaign.public_id)).get_data(as_text=True)
    assert "Draft saved" in page and "Winter sale" in page


@pytest.mark.parametrize(("fields", "message"), [
    ({"var_items": "[{nope"}, "Not valid JSON"),
    ({"var_headline": ""}, "Fill in every field the template needs: Headline"),
    ({"segment-0-attribute": "x" * 65, "segment-0-value": "1"}, "Field cannot be longer"),
    ({"topic": "unknown"}, "Not a valid choice"),
    ({"var_headline": "4111 1111 1111 1111"}, "card number"),
])
def test_compose_shows_problems_on_the_page(console, make_topic, fields, message):
    make_topic("news", double_opt_in=False)
    for action in ("preview", "create"):
        response = compose(console, action, **fields)
        assert response.status_code == 422
        assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(Campaign)) is None


@pytest.mark.parametrize(("local", "zone", "browser", "utc"), [
    ("2030-01-15T09:00", "Europe/Berlin", "", dt.datetime(2030, 1, 15, 8, 0, tzinfo=dt.UTC)),
    ("2030-07-15T09:00", "Europe/Berlin", "", dt.datetime(2030, 7, 15, 7, 0, tzinfo=dt.UTC)),
    ("2030-01-15T09:00", "", "America/New_York",
     dt.datetime(2030, 1, 15, 14, 0, tzinfo=dt.UTC)),
    ("2030-01-15T09:00", "", "", dt.datetime(2030, 1, 15, 9, 0, tzinfo=dt.UTC)),
    ("2030-01-15T09:00", "", "Not/AZone", dt.datetime(2030, 1, 15, 9, 0, tzinfo=dt.UTC)),
])
def test_schedule_takes_a_wall_clock_time_in_a_time_zone(console, make_topic, local, zone,
                                                         browser, utc):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    response = post(console, f"{page_of(campaign)}/schedule",
                    {"send_at": local, "timezone": zone, "browser_timezone": browser},
                    form_page=page_of(campaign))
    # First a confirmation page, which names the time in its zone and in UTC.
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f"{utc:%Y-%m-%d %H:%M} UTC" in page
    fresh()
    assert campaigns.get(campaign).status == "draft"
    send_at_utc = re.search(r'name="send_at_utc" value="([^"]+)"', page).group(1)
    response = post(console, f"{page_of(campaign)}/schedule/confirmed",
                    {"send_at_utc": send_at_utc}, form_page=page_of(campaign))
    assert response.status_code == 302
    fresh()
    scheduled = campaigns.get(campaign)
    assert scheduled.status == "scheduled"
    assert scheduled.send_at == utc
    assert "Scheduled for" in flashed(console, page_of(campaign))


def test_schedule_refuses_a_time_the_clocks_skip_and_an_unknown_zone(console, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    for data, message in [
        ({"send_at": "2030-03-31T02:30", "timezone": "Europe/Berlin"}, "does not exist"),
        ({"send_at": "2030-01-15T09:00", "timezone": "Mars/Olympus"}, "Not a valid choice"),
        ({"send_at": "", "timezone": "UTC"}, "Choose a date and time"),
    ]:
        post(console, f"{page_of(campaign)}/schedule", data, form_page=page_of(campaign))
        assert message in flashed(console, page_of(campaign))
    fresh()
    assert campaigns.get(campaign).status == "draft"


def test_the_page_offers_every_iana_zone_and_fills_in_the_browsers(console, make_topic):
    make_topic("news", double_opt_in=False)
    html = console.get(page_of(draft())).get_data(as_text=True)
    assert '<option value="Europe/Berlin">' in html and '<option value="Asia/Tokyo">' in html
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in html
    assert 'name="browser_timezone" type="hidden"' in html


def test_an_invalid_transition_is_shown_as_a_message(console, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    response = post(console, f"{page_of(campaign)}/pause", form_page=page_of(campaign))
    assert response.status_code == 302
    assert "A draft campaign cannot pause." in flashed(console, page_of(campaign))

    post(console, f"{page_of(campaign)}/cancel", form_page=page_of(campaign))
    fresh()
    assert campaigns.get(campaign).status == "cancelled"
    post(console, f"{page_of(campaign)}/resume", form_page=page_of(campaign))
    assert "A cancelled campaign cannot resume." in flashed(console, page_of(campaign))


def test_send_now_pause_resume_and_the_progress_feed(app, console, make_topic):
    make_topic("news", double_opt_in=False)
    for i in range(4):
        contacts.upsert(f"fan{i}@example.com", topics=["news"])
    db.session.commit()
    campaign = draft()
    progress = console.get(f"{page_of(campaign)}/progress").get_json()
    assert progress["status"] == "draft" and progress["percent"] == 0 and not progress["final"]

    post(console, f"{page_of(campaign)}/send-now", form_page=page_of(campaign))
    scheduler.tick("test")  # the worker's scheduler fans the campaign out
    fresh()
    post(console, f"{page_of(campaign)}/pause", form_page=page_of(campaign))
    response = console.get(f"{page_of(campaign)}/progress")
    progress = response.get_json()
    assert progress["status"] == "paused"
    assert progress["counts"]["recipients"] == 4 and progress["counts"]["queued"] == 4
    assert (progress["done"], progress["percent"]) == (0, 0)
    assert "@" not in response.get_data(as_text=True)  # counts only

    post(console, f"{page_of(campaign)}/resume", form_page=page_of(campaign))
    fresh()
    db.session.execute(Message.__table__.update().where(Message.id.in_(
        select(Message.id).order_by(Message.id).limit(1).scalar_subquery())).values(
        status="sent"))
    db.session.commit()
    progress = console.get(f"{page_of(campaign)}/progress").get_json()
    assert progress["status"] == "running"
    assert (progress["done"], progress["percent"]) == (1, 25)
    page = console.get(page_of(campaign)).get_data(as_text=True)
    assert '<progress id="progress-bar" max="100" value="25"' in page
    assert "fan0@example.com" not in page


def test_an_unknown_campaign_is_404(console):
    assert console.get("/admin/campaigns/nope").status_code == 404
    assert console.get("/admin/campaigns/nope/progress").status_code == 404


# -- suppressions ------------------------------------------------------------------------------

def test_a_suppression_lookup_shows_the_marks_of_the_typed_address_and_logs_nothing_of_it(
        console, caplog):
    suppressions.suppress(addresses.hash_of("gone@example.com"), Reason.BOUNCED,
                          source=ConsentSource.BOUNCE)
    db.session.commit()
    caplog.set_level(logging.DEBUG)
    found = post(console, "/admin/suppressions", {"email": "Gone@Example.com"},
                 form_page="/admin/suppressions")
    html = found.get_data(as_text=True)
    assert found.status_code == 200
    assert "<td>bounced</td><td>all</td><td>—</td>" in html
    none = post(console, "/admin/suppressions", {"email": "fine@example.com"},
                form_page="/admin/suppressions")
    assert "No marks on this address." in none.get_data(as_text=True)
    logged = "\n".join(record.getMessage() for record in caplog.records).lower()
    assert "gone@example.com" not in logged and "fine@example.com" not in logged
    assert "127.0.0.1" not in logged


def test_a_suppression_lookup_names_the_topic_of_a_topic_mark(console, make_topic):
    topic = make_topic("news")
    suppressions.suppress(addresses.hash_of("left@example.com"), Reason.UNSUBSCRIBED,
                          source=ConsentSource.ONE_CLICK, topic_id=topic.id)
    db.session.commit()
    html = post(console, "/admin/suppressions", {"email": "left@example.com"},
                form_page="/admin/suppressions").get_data(as_text=True)
    assert "<td>unsubscribed</td><td>topic</td><td>News</td>" in html


def test_a_suppression_lookup_of_a_bad_address_says_why(console):
    response = post(console, "/admin/suppressions", {"email": "no-at-sign"},
                    form_page="/admin/suppressions")
    assert response.status_code == 422
    assert "@-sign" in response.get_data(as_text=True)
