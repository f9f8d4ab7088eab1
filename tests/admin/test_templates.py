"""Templates written in the console: the editor, versions, the API using them by name, and
their mail through a real SMTP server (footer, List-Unsubscribe, sanitized HTML); the compose
form's variable fields and segment count. On SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import email
import email.policy

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.models import ConsoleTemplate, Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.admin.test_console import console, log_in, post, user  # noqa: F401 (fixtures)
from tests.delivery.helpers import run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer

NEW = "/admin/templates/new"
BODY = """# {{ headline }}

Hello, this week: **{{ intro }}**. See [the shop]({{ shop_url }}).

<script>alert("x")</script><a href="javascript:alert(1)" onclick="steal()">click</a>
"""


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def form(**overrides) -> dict:
    fields = {
        "category": "promotional", "description": "Weekly news", "subject": "{{ headline }}",
        "body_format": "markdown", "body": BODY, "text": "",
        "variables-0-name": "headline", "variables-0-label": "Headline",
        "variables-0-example": "Fresh strings",
        "variables-1-name": "intro", "variables-1-label": "Introduction",
        "variables-1-example": "Strings are in",
        "variables-2-name": "shop_url", "variables-2-label": "Shop link",
        "variables-2-example": "https://shop.example/",
    }
    fields.update(overrides)
    return fields


def save_new(console, name: str = "weekly", **overrides):  # noqa: F811
    return post(console, NEW, {"name": name, "action": "save", **form(**overrides)},
                form_page=NEW)


def save_edit(console, name: str, **overrides):  # noqa: F811
    page = f"/admin/templates/{name}/edit"
    current = db.session.scalar(select(func.max(ConsoleTemplate.version))
                                .where(ConsoleTemplate.name == name))
    return post(console, page, {"action": "save", "base_version": str(current),
                                **form(**overrides)}, form_page=page)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def subscribe(*emails: str, **attributes) -> None:
    for address in emails:
        contacts.upsert(address, topics=["news"], attributes=attributes or None)
    db.session.commit()


# -- the editor ----------------------------------------------------------------------------------

def test_a_new_template_is_previewed_at_both_widths_then_saved_as_version_1(console):  # noqa: F811
    preview = post(console, NEW, {"name": "weekly", "action": "preview", **form()},
                   form_page=NEW)
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200, html
    assert "Desktop" in html and "Phone (390 px)" in html
    assert "Fresh strings" in html and "/unsubscribe/" in html  # the real footer
    assert "Music Store, 1 High Street" in html
    assert db.session.scalar(select(func.count()).select_from(ConsoleTemplate)) == 0

    saved = save_new(console)
    assert saved.status_code == 302 and saved.headers["Location"] == "/admin/templates/weekly"
    row = db.session.scalar(select(ConsoleTemplate))
    assert (row.name, row.version, row.category) == ("weekly", 1, "promotional")
    # Sanitized when saved: no script, no handler, no javascript: link; Jinja kept.
    assert "<script" not in row.body_html and "onclick" not in row.body_html
    assert "javascript:" not in row.body_html
    assert '<a href="{{ shop_url }}"' in row.body_html
    assert "<h1>{{ headline }}</h1>" in row.body_html
    listing = console.get("/admin/templates").get_data(as_text=True)
    assert "weekly" in listing and "written here, version 1" in listing
    assert 'class="category category-promotional"' in listing
    assert 'class="category category-transactional"' in listing  # receipt's


def test_editing_saves_a_new_version_and_a_campaign_keeps_its_own(app, console, make_topic,  # noqa: F811
                                                                 smtp):
    make_topic("news", double_opt_in=False)
    subscribe("fan@example.com")
    assert save_new(console).status_code == 302
    campaign = post(console, "/admin/campaigns/new", {
        "name": "Week 1", "topic": "news", "template": "weekly", "action": "create",
        "var_headline": "First issue", "var_intro": "Old text",
        "var_shop_url": "https://shop.example/"},
        form_page="/admin/campaigns/new?template=weekly")
    assert campaign.status_code == 302, campaign.get_data(as_text=True)
    stored = db.session.scalar(select(Campaign))
    assert stored.template == "weekly@1"

    edited = save_edit(console, "weekly", subject="NEW: {{ headline }}")
    assert edited.status_code == 302
    assert [row.version for row in db.session.scalars(
        select(ConsoleTemplate).order_by(ConsoleTemplate.version))] == [1, 2]
    assert templates.lookup("weekly").reference == "weekly@2"

    from mailer.campaigns import services as campaigns
    campaigns.schedule(campaigns.get(stored.public_id), None)
    db.session.commit()
    run_worker_until_idle(app, smtp.url, until_all_final=True, until=lambda: db.session.scalar(
        select(Campaign.status).where(Campaign.id == stored.id)) == "finished")
    [mail] = smtp.messages
    assert parse(mail.data)["Subject"] == "First issue"  # version 1's subject, not "NEW: ..."


def test_an_edit_over_a_newer_version_is_refused(console):  # noqa: F811
    assert save_new(console).status_code == 302
    page = "/admin/templates/weekly/edit"
    stale = {"action": "save", "base_version": "1", **form(subject="A")}
    assert post(console, page, stale, form_page=page).status_code == 302
    again = post(console, page, stale, form_page=page)
    assert again.status_code == 422
    assert "Version 2 of &#39;weekly&#39; was saved" in again.get_data(as_text=True)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": "confirm_subscription"}, "the service&#39;s own mails"),
    ({"name": "new"}, "a word the console uses"),
    ({"name": "Bad Name"}, "lower-case letters"),
    ({"body": "{% if %}"}, "template error"),
    ({"body": "{{ headline }} {{ undeclared_thing }}"}, "does not declare: undeclared_thing"),
    ({"subject": ""}, "Write a subject."),
])
def test_the_editor_reports_problems_on_the_page(console, overrides, message):  # noqa: F811
    name = overrides.pop("name", "weekly")
    response = save_new(console, name, **overrides)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(ConsoleTemplate)) == 0


def test_jinja_in_a_console_template_runs_in_the_sandbox(console):  # noqa: F811
    response = post(console, NEW, {"name": "evil", "action": "preview", **form(
        body="{{ headline.__class__.__mro__[1].__subclasses__() }}",
        **{"variables-0-name": "", "variables-1-name": "", "variables-2-name": ""})},
        form_page=NEW)
    assert response.status_code == 422
    assert "unsafe" in response.get_data(as_text=True)


def test_every_template_form_needs_its_csrf_token(console):  # noqa: F811
    assert save_new(console).status_code == 302
    for path in (NEW, "/admin/templates/weekly/edit", "/admin/templates/weekly"):
        response = console.post(path, data={"name": "other", "action": "save", **form()})
        assert response.status_code == 400, path
    assert db.session.scalar(select(func.count()).select_from(ConsoleTemplate)) == 1


# -- the API uses them by name -------------------------------------------------------------------

def test_a_console_template_is_sent_by_name_through_real_smtp_with_footer_and_headers(
        app, client, auth, console, make_topic, smtp):  # noqa: F811
    make_topic("news", double_opt_in=False)
    subscribe("fan@example.com")
    assert save_new(console).status_code == 302
    sent = client.post("/api/v1/messages", headers=auth, json={
        "to": "fan@example.com", "template": "weekly", "topic": "news",
        "data": {"headline": "Spring", "intro": "Strings <b>half</b> price",
                 "shop_url": "javascript:alert(1)"}})
    assert sent.status_code == 202, sent.get_json()
    # The API's category is the template's: "transactional" is refused for it.
    refused = client.post("/api/v1/messages", headers=auth, json={
        "to": "fan@example.com", "template": "weekly", "category": "transactional",
        "data": {"headline": "x", "intro": "y", "shop_url": "https://shop.example/"}})
    assert refused.get_json()["error"]["code"] == "category_mismatch"
    assert db.session.scalar(select(Message.template)) == "weekly@1"
    run_worker_until_idle(app, smtp.url)
    [received] = smtp.messages
    mail = parse(received.data)
    assert mail["Subject"] == "Spring"
    assert mail["List-Unsubscribe"].startswith("<http") and mail["List-Unsubscribe-Post"]
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    postal = app.config["MAILER_POSTAL_ADDRESS"]
    for part in (html, text):
        assert "/unsubscribe/" in part and postal in part
    assert "Strings &lt;b&gt;half&lt;/b&gt; price" in html  # data is escaped
    assert "javascript:" not in html and "<script" not in html and "onclick" not in html
    assert 'name="viewport"' in html and "max-width:600px" in html
    assert "# Spring" in text  # the Markdown is the text part


def test_a_console_template_wins_over_a_folder_of_the_same_name(client, auth, console):  # noqa: F811
    page = "/admin/templates/receipt/edit"
    assert "A folder on the server has this template" in console.get(page).get_data(
        as_text=True)
    saved = post(console, page, {"action": "save", **form(
        category="transactional", subject="Receipt {{ order_number }}",
        body="Order {{ order_number }}", **{
            "variables-0-name": "order_number", "variables-0-label": "Order",
            "variables-1-name": "", "variables-2-name": ""})}, form_page=page)
    assert saved.status_code == 302, saved.get_data(as_text=True)
    response = client.post("/api/v1/messages", headers=auth, json={
        "to": "buyer@example.com", "template": "receipt", "data": {"order_number": "A-1"}})
    assert response.status_code == 202
    assert db.session.scalar(select(Message.template)) == "receipt@1"


# -- the compose form ----------------------------------------------------------------------------

def test_compose_offers_promotional_templates_only_and_a_field_per_variable(console,  # noqa: F811
                                                                           make_topic):
    make_topic("news", double_opt_in=False)
    page = console.get("/admin/campaigns/new?template=newsletter").get_data(as_text=True)
    assert 'value="newsletter"' in page and 'value="receipt"' not in page
    assert 'value="policy_update"' not in page and 'value="referral"' not in page
    assert 'name="data"' not in page  # no JSON box
    assert '<label for="var_headline">Headline (also the subject)</label>' in page
    assert 'name="var_items"' in page
    refused = post(console, "/admin/campaigns/new", {
        "name": "X", "topic": "news", "template": "receipt", "action": "create"},
        form_page="/admin/campaigns/new")
    assert refused.status_code == 422 and "Not a valid choice" in refused.get_data(as_text=True)


def test_compose_names_every_missing_field_at_once(console, make_topic):  # noqa: F811
    make_topic("news", double_opt_in=False)
    assert save_new(console).status_code == 302
    response = post(console, "/admin/campaigns/new", {
        "name": "X", "topic": "news", "template": "weekly", "action": "preview"},
        form_page="/admin/campaigns/new?template=weekly")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Fill in every field the template needs: Headline, Introduction, Shop link." in html
    # An optional variable (the newsletter's items has a default) is not asked for.
    response = post(console, "/admin/campaigns/new", {
        "name": "X", "topic": "news", "template": "newsletter", "action": "preview"},
        form_page="/admin/campaigns/new?template=newsletter")
    html = response.get_data(as_text=True)
    assert "Headline (also the subject), Introduction." in html


def test_the_segment_count_is_what_the_fan_out_queues(app, console, make_topic, smtp):  # noqa: F811
    make_topic("news", double_opt_in=False)
    subscribe("de1@example.com", "de2@example.com", "de3@example.com", country="DE")
    subscribe("fr1@example.com", country="FR")
    suppressions.suppress(addresses.hash_of("de3@example.com"), Reason.QUARANTINED,
                          source=ConsentSource.REFERRAL)
    contacts.update(contacts.get("de2@example.com"), subscriptions={"news": "unsubscribed"})
    db.session.commit()
    fields = {"name": "DE only", "topic": "news", "template": "newsletter",
              "var_headline": "Hallo", "var_intro": "Saiten",
              "segment-0-attribute": "country", "segment-0-value": "DE"}
    counted = post(console, "/admin/campaigns/new", {**fields, "action": "count"},
                   form_page="/admin/campaigns/new?template=newsletter")
    assert counted.status_code == 200
    assert "<strong>1</strong> recipient now" in counted.get_data(as_text=True)
    everyone = post(console, "/admin/campaigns/new", {
        **fields, "segment-0-attribute": "", "action": "count"},
        form_page="/admin/campaigns/new?template=newsletter")
    assert "<strong>2</strong> recipients now" in everyone.get_data(as_text=True)

    created = post(console, "/admin/campaigns/new", {**fields, "action": "create"},
                   form_page="/admin/campaigns/new?template=newsletter")
    assert created.status_code == 302
    from mailer.campaigns import services as campaigns
    stored = db.session.scalar(select(Campaign))
    campaigns.schedule(stored, None)
    db.session.commit()
    run_worker_until_idle(app, smtp.url, until=lambda: db.session.scalar(
        select(Campaign.status).where(Campaign.id == stored.id)) == "finished")
    assert collections.Counter(m.rcpt_tos[0] for m in smtp.messages) == {"de1@example.com": 1}
