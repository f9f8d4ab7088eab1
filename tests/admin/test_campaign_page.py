"""A campaign's console page: what a draft shows, only the actions its state allows, a
confirmation step before sending and before cancelling, times with their zone, and test
sends that reach the console user (who need not be subscribed) and never a typed address."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.campaigns import scheduler
from mailer.campaigns import services as campaigns
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.admin.sections import MARKETER, fresh, marketer_console, post, text
from tests.admin.test_console import draft
from tests.delivery.helpers import run_worker_until_idle
from tests.smtp_server import ScriptedSmtpServer


@pytest.fixture
def console(client):
    return marketer_console(client)


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def page_of(campaign: str) -> str:
    return f"/admin/campaigns/{campaign}"


def buttons(page: str) -> set[str]:
    """The labels of the page's buttons and button-links."""
    found = re.findall(r"<button[^>]*>([^<]+)</button>", page)
    found += re.findall(r'<a class="button[^"]*"[^>]*>([^<]+)</a>', page)
    return {label.strip() for label in found} - {"Log out", "Send test"}


def subscribers(n: int) -> None:
    for i in range(n):
        contacts.upsert(f"fan{i}@example.com", topics=["news"])
    db.session.commit()


def test_a_draft_shows_its_audience_not_zero_of_zero(console, make_topic):
    make_topic("news", double_opt_in=False)
    subscribers(3)
    suppressions.suppress(addresses.hash_of("fan2@example.com"), Reason.COMPLAINED,
                          source=ConsentSource.COMPLAINT)
    db.session.commit()
    page = text(console.get(page_of(draft())))
    assert "0 of 0" not in page and "recipients done" not in page
    assert "It would reach <strong>2</strong> addresses" in page
    assert "fan0@example.com" not in page


def test_only_the_actions_the_state_allows_are_offered(console, make_topic):
    make_topic("news", double_opt_in=False)
    subscribers(2)
    campaign = draft()
    assert buttons(text(console.get(page_of(campaign)))) == {
        "Schedule…", "Send now…", "Cancel campaign…"}
    post(console, f"{page_of(campaign)}/send-now", form_page=page_of(campaign))
    scheduler.tick("test")
    fresh()
    running = text(console.get(page_of(campaign)))
    assert buttons(running) == {"Pause", "Cancel campaign…"}
    assert 'name="send_at"' not in running  # no schedule form once it runs
    post(console, f"{page_of(campaign)}/pause", form_page=page_of(campaign))
    assert buttons(text(console.get(page_of(campaign)))) == {"Resume", "Cancel campaign…"}
    post(console, f"{page_of(campaign)}/cancel", form_page=page_of(campaign))
    assert buttons(text(console.get(page_of(campaign)))) == set()


def test_send_now_and_cancel_ask_first(console, make_topic):
    make_topic("news", double_opt_in=False)
    subscribers(3)
    campaign = draft()
    confirm = console.get(f"{page_of(campaign)}/send-now")
    assert confirm.status_code == 200
    assert 'id="confirm-audience">3<' in text(confirm)
    fresh()
    assert campaigns.get(campaign).status == "draft"  # asking changed nothing
    post(console, f"{page_of(campaign)}/send-now", form_page=page_of(campaign))
    fresh()
    assert campaigns.get(campaign).status == "scheduled"

    cancel = console.get(f"{page_of(campaign)}/cancel")
    assert cancel.status_code == 200 and "Cancel the campaign" in text(cancel)
    fresh()
    assert campaigns.get(campaign).status == "scheduled"
    post(console, f"{page_of(campaign)}/cancel", form_page=page_of(campaign))
    fresh()
    assert campaigns.get(campaign).status == "cancelled"
    # A finished or cancelled campaign's confirmation pages send back with a message.
    assert console.get(f"{page_of(campaign)}/send-now").status_code == 302
    assert console.get(f"{page_of(campaign)}/cancel").status_code == 302


def test_times_carry_their_zone_and_the_page_follows_a_running_campaign(console, make_topic):
    make_topic("news", double_opt_in=False)
    subscribers(1)
    campaign = draft()
    post(console, f"{page_of(campaign)}/send-now", form_page=page_of(campaign))
    scheduler.tick("test")
    fresh()
    page = text(console.get(page_of(campaign)))
    assert re.search(r'<time class="local" datetime="[^"]+\+00:00">[^<]+ UTC</time>', page)
    assert 'timeZoneName: "short"' in page
    # Without a script the page reloads itself while it runs; with one it polls.
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    assert 'data-url="/admin/campaigns/' in page


def test_the_first_test_send_reaches_the_console_user_who_is_not_subscribed(
        app, console, make_topic, smtp):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    page = text(console.get(page_of(campaign)))
    assert f'<option selected value="{MARKETER}">' in page
    response = post(console, f"{page_of(campaign)}/test", {"to": MARKETER},
                    form_page=page_of(campaign))
    assert response.status_code == 302
    assert "Test mail queued" in text(console.get(page_of(campaign)))
    run_worker_until_idle(app, smtp.url)
    assert len(smtp.messages) == 1
    mail = email.message_from_bytes(smtp.messages[0].data, policy=email.policy.default)
    assert mail["To"] == MARKETER and mail["Subject"].startswith("[TEST] ")
    fresh()
    assert db.session.scalar(select(Message.status)) == "sent"
    assert campaigns.stats(campaigns.get(campaign))["recipients"] == 0  # not counted


def test_a_test_goes_to_the_configured_list_but_never_to_a_typed_address(app, console,
                                                                          make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    app.config["MAILER_TEST_RECIPIENTS"] = ["proofreader@shop.example"]
    try:
        assert "proofreader@shop.example" in text(console.get(page_of(campaign)))
        post(console, f"{page_of(campaign)}/test", {"to": "proofreader@shop.example"},
             form_page=page_of(campaign))
        post(console, f"{page_of(campaign)}/test", {"to": "someone@example.com"},
             form_page=page_of(campaign))
        assert "Not a valid choice" in text(console.get(page_of(campaign)))
    finally:
        app.config["MAILER_TEST_RECIPIENTS"] = []
    fresh()
    assert list(db.session.scalars(select(Message.to_address))) == ["proofreader@shop.example"]


def test_a_marked_test_recipient_still_gets_no_test(console, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    suppressions.suppress(addresses.hash_of(MARKETER), Reason.COMPLAINED,
                          source=ConsentSource.COMPLAINT)
    db.session.commit()
    post(console, f"{page_of(campaign)}/test", {"to": MARKETER}, form_page=page_of(campaign))
    assert "refused (complained)" in text(console.get(page_of(campaign)))
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_a_test_to_a_stranger_through_the_api_is_still_refused(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    campaign = draft()
    response = client.post(f"/api/v1/campaigns/{campaign}/test",
                           json={"to": "stranger@example.com"}, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["error"]["reason"] == "not_subscribed"
