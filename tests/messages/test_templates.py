"""The template catalogue, and the template (not the caller) deciding the kind of mail.

The attack of issue 15: a marketing template sent as `"category": "transactional"` passed
the consent gate for quarantined, complained and unsubscribed addresses and went out
without List-Unsubscribe. Against a real SMTP server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.models import Message, TemplateCategory
from mailer.messages.render import DEFAULT_TEMPLATE_DIR
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.delivery.helpers import run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer

MESSAGES = "/api/v1/messages"
NEWS = {"headline": "Spring sale", "intro": "Strings half price."}
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Guitar", "price": "€399"}],
           "total": "€399"}


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def count_messages() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Message))


def mark(email: str, reason: Reason, topic_id: int | None = None) -> None:
    suppressions.suppress(addresses.hash_of(email), reason, source=ConsentSource.API,
                          topic_id=topic_id)
    db.session.commit()


# -- the shipped templates declare their category ------------------------------------------------

def test_every_shipped_template_declares_its_category_in_template_toml():
    folders = [p for p in DEFAULT_TEMPLATE_DIR.iterdir()
               if p.is_dir() and (p / "subject.txt").is_file()]
    assert folders
    for folder in folders:
        declared = tomllib.loads((folder / "template.toml").read_text())
        assert declared["category"] in {"transactional", "promotional", "notice"}, folder


def test_the_catalogue_answers_category_description_variables_source_and_version(app):
    news = templates.lookup("newsletter")
    assert news.category is TemplateCategory.PROMOTIONAL and news.source == "file"
    assert [v.name for v in news.variables] == ["headline", "intro", "items"]
    assert news.declared and news.variables[0].label.startswith("Headline")
    assert news.description and len(news.version) == 12 and news.reference == "newsletter"
    assert templates.lookup("receipt").category is TemplateCategory.TRANSACTIONAL
    assert templates.lookup("policy_update").category is TemplateCategory.NOTICE
    confirmation = templates.lookup("confirm_subscription")
    assert confirmation.service is not None and confirmation.sends_as == "confirmation"
    names = [info.name for info in templates.catalogue()]
    assert {"newsletter", "receipt", "referral", "policy_update"} <= set(names)
    assert not any(name.startswith("_") for name in names)


def test_a_folder_without_template_toml_is_promotional_with_its_jinja_names_as_variables(
        app, tmp_path: Path):
    folder = tmp_path / "plain_offer"
    folder.mkdir()
    (folder / "subject.txt").write_text("{{ title }}")
    (folder / "body.txt").write_text(
        "{% set greeting = 'Hi' %}{{ greeting }} {{ name }}: {{ unsubscribe_url }}\n"
        "{% for p in products %}{{ p }}{% endfor %}")
    app.extensions["mailer.renderer"].search_path.insert(0, tmp_path)
    try:
        info = templates.lookup("plain_offer")
    finally:
        app.extensions["mailer.renderer"].search_path.remove(tmp_path)
    assert info.category is TemplateCategory.PROMOTIONAL and not info.declared
    # The service's own variables (unsubscribe_url) and names the template sets are not asked.
    assert [v.name for v in info.variables] == ["name", "products", "title"]
    assert info.examples()["products"] == []


def test_a_bad_category_in_template_toml_is_reported_naming_the_file(app, tmp_path: Path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for part in ("subject.txt", "body.txt"):
        (folder / part).write_text("x")
    (folder / "template.toml").write_text('category = "urgent"\n')
    app.extensions["mailer.renderer"].search_path.insert(0, tmp_path)
    try:
        with pytest.raises(templates.TemplateProblem, match=r"odd/template\.toml"):
            templates.lookup("odd")
    finally:
        app.extensions["mailer.renderer"].search_path.remove(tmp_path)


# -- the API: the template decides ---------------------------------------------------------------

@pytest.mark.parametrize("reason", [Reason.QUARANTINED, Reason.COMPLAINED, Reason.LEFT])
def test_a_marketing_template_sent_as_transactional_to_a_marked_address_is_refused(
        app, client, auth, smtp, reason):
    """The attack: before, this was 202 and the newsletter reached the marked address as
    transactional mail, without List-Unsubscribe."""
    mark("friend@example.org", reason)
    response = client.post(MESSAGES, headers=auth, json={
        "to": "friend@example.org", "template": "newsletter", "data": NEWS,
        "category": "transactional"})
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "category_mismatch"
    assert error["template_category"] == "promotional"
    assert count_messages() == 0
    run_worker_until_idle(app, smtp.url)
    assert smtp.messages == []


def test_category_may_be_left_out_the_template_decides(app, client, auth, smtp, make_topic):
    make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", headers=auth,
                json={"email": "fan@example.com", "topics": ["news"]})
    receipt = client.post(MESSAGES, headers=auth, json={
        "to": "buyer@example.com", "template": "receipt", "data": RECEIPT})
    assert receipt.status_code == 202, receipt.get_json()
    # Without a topic a promotional template is still refused: it needs one.
    no_topic = client.post(MESSAGES, headers=auth, json={
        "to": "fan@example.com", "template": "newsletter", "data": NEWS})
    assert no_topic.status_code == 422
    assert "topic" in no_topic.get_json()["error"]["fields"]
    news = client.post(MESSAGES, headers=auth, json={
        "to": "fan@example.com", "template": "newsletter", "data": NEWS, "topic": "news"})
    assert news.status_code == 202, news.get_json()
    run_worker_until_idle(app, smtp.url)
    by_rcpt = {m.rcpt_tos[0]: m.data for m in smtp.messages}
    assert b"List-Unsubscribe:" in by_rcpt["fan@example.com"]
    assert b"List-Unsubscribe:" not in by_rcpt["buyer@example.com"]
    db.session.rollback()
    assert set(db.session.scalars(select(Message.category))) == {"transactional", "promotional"}


def test_a_transactional_template_sent_as_promotional_is_refused_too(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    response = client.post(MESSAGES, headers=auth, json={
        "to": "buyer@example.com", "template": "receipt", "data": RECEIPT,
        "category": "promotional", "topic": "news"})
    assert response.get_json()["error"]["code"] == "category_mismatch"
    assert count_messages() == 0


@pytest.mark.parametrize("template", ["confirm_subscription", "referral", "preference_link",
                                      "policy_update"])
def test_the_api_sends_neither_the_services_own_mails_nor_notices(client, auth, template):
    data = {"confirm_url": "https://evil.example/", "topic_names": ["x"],
            "preferences_url": "https://evil.example/", "sender_name": "A", "item_name": "B",
            "item_url": "https://evil.example/", "note": "", "effective_date": "today",
            "summary": "s", "policy_url": "https://evil.example/"}
    for body in ({"category": "transactional"}, {}):
        response = client.post(MESSAGES, headers=auth, json={
            "to": "victim@example.org", "template": template, "data": data, **body})
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["code"] == "category_mismatch"
    assert count_messages() == 0


def test_a_batch_item_with_the_wrong_category_is_refused_alone(client, auth):
    mark("friend@example.org", Reason.QUARANTINED)
    response = client.post(f"{MESSAGES}/batch", headers=auth, json={"messages": [
        {"to": "friend@example.org", "template": "newsletter", "data": NEWS,
         "category": "transactional"},
        {"to": "buyer@example.com", "template": "receipt", "data": RECEIPT},
    ]})
    results = response.get_json()["results"]
    assert results[0]["status"] == 422 and results[0]["error"]["code"] == "category_mismatch"
    assert results[1]["status"] == 202
    assert count_messages() == 1


def test_campaigns_take_only_promotional_templates(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    for template, data in (("receipt", RECEIPT),
                           ("policy_update", {"effective_date": "d", "summary": "s",
                                              "policy_url": "https://x.example/"})):
        response = client.post("/api/v1/campaigns", headers=auth, json={
            "name": "Oops", "topic": "news", "template": template, "data": data})
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert error["code"] == "category_mismatch"
        assert "promotional templates only" in error["message"]
    ok = client.post("/api/v1/campaigns", headers=auth, json={
        "name": "Spring", "topic": "news", "template": "newsletter", "data": NEWS})
    assert ok.status_code == 201, ok.get_json()


def test_the_openapi_document_lists_category_mismatch(client):
    document = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/messages", "/api/v1/campaigns"):
        described = document["paths"][path]["post"]["responses"]["422"]["description"]
        assert "category_mismatch" in described, path
    send = document["components"]["schemas"]["Send"]
    assert "category" not in send.get("required", [])


def test_a_restyled_service_mail_without_template_toml_keeps_the_shipped_declaration(
        app, tmp_path: Path):
    # A MAILER_TEMPLATE_DIR folder overriding confirm_subscription's parts only: still the
    # service's confirmation mail, not a promotional template.
    folder = tmp_path / "confirm_subscription"
    folder.mkdir()
    (folder / "subject.txt").write_text("Please confirm")
    (folder / "body.txt").write_text("{{ confirm_url }}")
    app.extensions["mailer.renderer"].search_path.insert(0, tmp_path)
    app.extensions.get("mailer.template_catalogue", {}).pop("confirm_subscription", None)
    try:
        info = templates.lookup("confirm_subscription")
    finally:
        app.extensions["mailer.renderer"].search_path.remove(tmp_path)
        app.extensions.get("mailer.template_catalogue", {}).pop("confirm_subscription", None)
    assert info.service == "confirmation" and info.location == str(folder)


def test_the_api_lists_templates_with_their_category(client, auth):
    listed = client.get("/api/v1/templates", headers=auth)
    assert listed.status_code == 200
    by_name = {t["name"]: t for t in listed.get_json()}
    assert by_name["newsletter"]["category"] == "promotional"
    assert by_name["receipt"]["category"] == "transactional"
    assert by_name["policy_update"]["category"] == "notice"
    assert by_name["referral"]["service_mail"] == "referral"
    assert [v["name"] for v in by_name["receipt"]["variables"]] == ["order_number", "items",
                                                                     "total"]
    one = client.get("/api/v1/templates/receipt", headers=auth).get_json()
    assert one["source"] == "file" and one["variables_declared"] is True
    missing = client.get("/api/v1/templates/nothing-here", headers=auth)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "template_not_found"


def test_the_worker_compiles_console_versions_beforehand_in_one_query(app):
    """screen() preloads a batch's console versions, so build_one() renders without the
    database (it runs on the worker's event loop)."""
    from mailer.messages import editing
    from mailer.messages.models import BodyFormat
    from tests.sql_events import listening

    for subject in ("One {{ x }}", "Two {{ x }}"):
        editing.save(editing.Draft(name="weekly", category=TemplateCategory.PROMOTIONAL,
                                   subject=subject, body_format=BodyFormat.MARKDOWN,
                                   body="Hi {{ x }}"), user_id=None,
                     new=subject.startswith("One"))
    db.session.commit()
    renderer = app.extensions["mailer.renderer"]
    renderer.forget_console_versions()
    sent: list[str] = []
    with listening(lambda *args: sent.append(args[2])):
        templates.preload({"weekly@1", "weekly@2", "weekly@3", "receipt"})
    assert len(sent) == 1
    assert renderer.knows("weekly@1") and renderer.knows("weekly@2")
    assert not renderer.knows("weekly@3")
    renderer.console_loader = None  # rendering now must not need the database
    try:
        assert renderer.render("weekly@1", {"x": "a"}).subject == "One a"
        assert renderer.render("weekly@2", {"x": "b"}).subject == "Two b"
    finally:
        renderer.console_loader = templates.load_console_source
