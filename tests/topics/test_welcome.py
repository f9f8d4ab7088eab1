"""A topic's welcome mail, through real SMTP: mailed once when a subscription to the topic is
confirmed (double opt-in confirm, single opt-in subscribe), as promotional mail of the topic
(the unsubscribe footer and headers), and only a promotional template may be named."""

from __future__ import annotations

import email
import email.policy

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.admin.sections import marketer_console, post, text
from tests.delivery.helpers import run_worker_until_idle
from tests.pages.helpers import csrf_token, last_confirm_path


def make_topic_with_welcome(client, auth, *, double_opt_in: bool, welcome="welcome"):
    return client.post("/api/v1/topics", headers=auth, json={
        "slug": "news", "name": "News", "double_opt_in": double_opt_in, "public": True,
        "welcome_template": welcome})


def welcomes(smtp, to: str) -> list[email.message.EmailMessage]:
    found = []
    for received in smtp.messages:
        mail = email.message_from_bytes(received.data, policy=email.policy.default)
        if received.rcpt_tos == [to] and mail["Subject"] == "Welcome to News":
            found.append(mail)
    return found


def test_single_opt_in_subscribe_mails_the_welcome_once(app, client, auth, smtp):
    made = make_topic_with_welcome(client, auth, double_opt_in=False)
    assert made.status_code == 201 and made.get_json()["welcome_template"] == "welcome"
    for _ in range(2):  # asking again while subscribed changes nothing, and mails nothing
        answer = client.post("/api/v1/contacts", headers=auth,
                             json={"email": "fan@example.com", "topics": ["news"]})
        assert answer.status_code in (200, 201), answer.get_json()
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    [welcome] = welcomes(smtp, "fan@example.com")
    assert welcome["List-Unsubscribe"].startswith("<http")
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in welcome.get_body(("plain",)).get_content()
    assert db.session.scalar(select(Message.category).where(
        Message.template == "welcome")) == "promotional"


def test_double_opt_in_welcomes_on_the_confirmation_not_before(app, client, auth, smtp):
    assert make_topic_with_welcome(client, auth, double_opt_in=True).status_code == 201
    client.post("/api/v1/contacts", headers=auth,
                json={"email": "fan@example.com", "topics": ["news"]})
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert len(smtp.messages) == 1 and not welcomes(smtp, "fan@example.com")  # confirmation
    path = last_confirm_path("fan@example.com")
    token = csrf_token(client, path)
    for _ in range(2):  # a second press (a double click, a reload) confirms nothing more
        assert client.post(path, data={"csrf_token": token}).status_code == 200
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert len(welcomes(smtp, "fan@example.com")) == 1


def test_the_gate_still_refuses_a_marked_address_its_welcome(app, client, auth, smtp):
    # A calling service's import of someone who complained: pending, so no welcome at all;
    # and a mark set between subscribe and delivery stops the queued welcome at delivery.
    make_topic_with_welcome(client, auth, double_opt_in=False)
    client.post("/api/v1/contacts", headers=auth,
                json={"email": "fan@example.com", "topics": ["news"]})
    suppressions.suppress(addresses.hash_of("fan@example.com"), Reason.COMPLAINED,
                          source=ConsentSource.COMPLAINT)
    db.session.commit()
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert not welcomes(smtp, "fan@example.com")
    assert db.session.scalar(select(Message.status).where(
        Message.template == "welcome")) == "suppressed"


def test_an_import_welcomes_nobody(app, client, auth, smtp):
    make_topic_with_welcome(client, auth, double_opt_in=False)
    from mailer.consent.services import RequestKind
    contacts.upsert("old@example.com", topics=["news"], kind=RequestKind.IMPORTED)
    db.session.commit()
    assert db.session.scalar(select(Message.id)) is None


@pytest.mark.parametrize(("template", "why"), [
    ("receipt", "not promotional"), ("policy_update", "not promotional"),
    ("newsletter", "needs data of its own"), ("no_such_template", "No template")])
def test_only_a_promotional_template_without_variables_may_be_named(client, auth, template,
                                                                    why):
    refused = make_topic_with_welcome(client, auth, double_opt_in=False, welcome=template)
    assert refused.status_code == 422
    assert why in " ".join(refused.get_json()["error"]["fields"]["welcome_template"])


def test_the_console_topic_form_sets_and_clears_the_welcome_mail(client, make_topic):
    console = marketer_console(client)
    make_topic("news")
    page = text(console.get("/admin/topics/news"))
    assert '<option value="welcome">welcome</option>' in page
    base = {"name": "News", "description": "", "welcome_text": ""}
    saved = post(console, "/admin/topics/news", {**base, "welcome_template": "welcome"},
                 form_page="/admin/topics/news")
    assert saved.status_code == 302
    db.session.expire_all()
    assert contacts_topic().welcome_template == "welcome"
    refused = post(console, "/admin/topics/news", {**base, "welcome_template": "receipt"},
                   form_page="/admin/topics/news")
    assert refused.status_code == 422 and "not promotional" in text(refused)
    cleared = post(console, "/admin/topics/news", {**base, "welcome_template": ""},
                   form_page="/admin/topics/news")
    assert cleared.status_code == 302
    db.session.expire_all()
    assert contacts_topic().welcome_template is None


def contacts_topic():
    from mailer.topics.models import Topic
    return db.session.scalar(select(Topic).where(Topic.slug == "news"))
