"""The console's notices page: a marketer sends a notice template for a policy version with the
template's variables, through real SMTP, and follows its progress; the same version again
sends nothing more."""

from __future__ import annotations

import pytest
from flask import g
from sqlalchemy import select

from mailer.consent.models import ConsentEvent
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.notices.models import Notice
from tests.admin.sections import marketer_console, post, text
from tests.delivery.helpers import run_worker_until_idle

FIELDS = {"template": "policy_update", "policy_version": "v3",
          "var_effective_date": "2 February 2027", "var_summary": "Shorter bounce keeping.",
          "var_policy_url": "https://shop.example/privacy"}


@pytest.fixture
def console(client):
    return marketer_console(client)


def deliver(app, smtp) -> None:
    """Run a worker until every mail is final. The tests share one app context with the
    client's requests, and the worker's session removal detaches the user Flask-Login keeps
    in `g`: it is forgotten, so the next request loads its user again."""
    run_worker_until_idle(app, smtp.url, until_all_final=True)
    g.pop("_login_user", None)


def test_a_marketer_sends_a_notice_and_sees_its_progress(app, console, smtp, make_topic):
    make_topic("news", double_opt_in=False)
    for number in range(3):
        contacts.upsert(f"reader{number}@example.com", topics=["news"])
    contacts.upsert("nobody@example.com")  # subscribed to nothing: no notice
    db.session.commit()

    page = text(console.get("/admin/notices"))
    assert "Date the new policy applies from" in page and "<strong>3</strong> contacts" in page
    sent = post(console, "/admin/notices", FIELDS, form_page="/admin/notices")
    assert sent.status_code == 302, text(sent)
    deliver(app, smtp)
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [
        f"reader{n}@example.com" for n in range(3)]
    assert b"2 February 2027" in smtp.messages[0].data

    notice = db.session.scalar(select(Notice))
    progress = text(console.get(sent.headers["Location"]))
    assert '<dd data-count="sent">3</dd>' in progress and 'data-count="done">3<' in progress
    assert "http-equiv=\"refresh\"" not in progress  # done: it stops reloading
    events = db.session.scalars(select(ConsentEvent).where(ConsentEvent.subject == "notice"))
    assert sorted((e.source, e.note) for e in events) == [("admin", "v3")] * 3
    assert notice.created_by == "marketer@shop.example"

    again = post(console, "/admin/notices", FIELDS, form_page="/admin/notices")
    assert again.status_code == 302
    deliver(app, smtp)
    assert len(smtp.messages) == 3
    assert "Notice queued to 0 contacts" in text(console.get(again.headers["Location"]))


def test_the_form_names_what_is_missing_and_sends_nothing(console, make_topic):
    make_topic("news", double_opt_in=False)
    contacts.upsert("reader@example.com", topics=["news"])
    db.session.commit()
    missing = post(console, "/admin/notices", {**FIELDS, "policy_version": ""},
                   form_page="/admin/notices")
    assert missing.status_code == 422 and "Name the policy version." in text(missing)
    assert db.session.scalar(select(Notice)) is None
