"""A marketer's journey through the console in a real browser: log in, compose a campaign,
preview it, send a test, send it to the topic, and watch the progress reach the end."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailer.admin import services as admin
from mailer.contacts import services as contacts
from mailer.extensions import db
from tests.e2e.helpers import run_worker_until_finished

pytestmark = pytest.mark.slow

MARKETER = "marketer@shop.example"
PASSWORD = "a long enough passphrase"
SUBSCRIBERS = ["ann@example.com", "bob@example.com", "cy@example.com"]


def test_compose_preview_test_send_and_watch_a_campaign_finish(page, live_url, smtp, deliver,
                                                                app, make_topic):
    make_topic("news", double_opt_in=False)
    for address in SUBSCRIBERS:
        contacts.upsert(address, topics=["news"])
    contacts.upsert(MARKETER, topics=["news"])  # test mails go to subscribers only
    admin.create_user(MARKETER, PASSWORD)
    db.session.commit()

    page.goto(f"{live_url}/admin/")
    page.get_by_role("heading", name="Log in").wait_for()
    page.get_by_label("Email address").fill(MARKETER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview").wait_for()

    page.get_by_role("navigation").get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="New campaign").click()
    page.get_by_label("Name", exact=True).fill("Winter")
    page.get_by_label("Topic").select_option(label="News")
    page.get_by_label("Template", exact=True).select_option("newsletter")
    # Choosing the template brings its variables as fields (the page reloads with them).
    page.get_by_label("Headline (also the subject)").fill("Winter sale")
    page.get_by_label("Introduction").fill("Pianos half price.")
    assert page.get_by_label("Name", exact=True).input_value() == "Winter"
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("heading", name="Preview").wait_for()
    assert page.locator(".subject").inner_text() == "Winter sale"
    frame = page.frame_locator("iframe.mail")
    frame.get_by_role("heading", name="Winter sale").wait_for()
    assert "Pianos half price." in page.locator("pre.mail").inner_text()

    page.get_by_role("button", name="Create campaign").click()
    page.get_by_role("heading", name="Winter").wait_for()
    public_id = page.url.rstrip("/").rsplit("/", 1)[-1]

    assert page.get_by_label("Send a test to").input_value() == MARKETER
    page.get_by_role("button", name="Send test").click()
    page.get_by_text("Test mail queued").wait_for()
    deliver()
    tests = [m for m in smtp.messages if m.rcpt_tos == [MARKETER]]
    assert len(tests) == 1
    test_mail = email.message_from_bytes(tests[0].data, policy=email.policy.default)
    assert test_mail["Subject"] == "[TEST] Winter sale"

    page.get_by_role("link", name="Send now…").click()
    page.get_by_role("button", name="Send it now").click()
    page.get_by_text("Sending starts within seconds.").wait_for()
    run_worker_until_finished(app, smtp, public_id)

    # The page's poll (every 2 s) brings the end in without a reload.
    progress = page.locator("#progress")
    progress.locator("[data-field=status]").get_by_text("finished").wait_for(timeout=15_000)
    assert progress.locator("dd[data-count=sent]").inner_text() == "4"
    assert progress.locator("span[data-count=recipients]").inner_text() == "4"
    assert progress.locator("span[data-count=done]").inner_text() == "4"
    assert page.locator("#progress-bar").evaluate("bar => bar.value") == 100
    assert page.locator("#controls").is_hidden()  # nothing left to schedule or pause
    campaign_mails = [m.rcpt_tos[0] for m in smtp.messages
                      if not email.message_from_bytes(m.data)["Subject"].startswith("[TEST]")]
    assert sorted(campaign_mails) == sorted([*SUBSCRIBERS, MARKETER])
    assert "@example.com" not in progress.inner_text()  # counts only
