"""A person's whole journey in a real browser: sign up, confirm from the mail, change
preferences, unsubscribe with the mail's link."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

pytestmark = pytest.mark.slow


def last_mail_to(smtp, address: str):
    mails = [m for m in smtp.messages if address in m.rcpt_tos]
    assert mails, f"no mail to {address}"
    return email.message_from_bytes(mails[-1].data, policy=email.policy.default)


def link_in(message, pattern: str) -> str:
    text = message.get_body(("plain",)).get_content()
    match = re.search(pattern, text)
    assert match, text
    return match.group(0)


def test_signup_confirm_preferences_and_unsubscribe(page, live_url, smtp, deliver, client, auth,
                                                    make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)

    page.goto(f"{live_url}/subscribe")
    page.get_by_label("Your email address").fill("walker@example.com")
    page.get_by_label("News").check()
    assert not page.get_by_label(re.compile("share my email address")).is_checked()
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()

    deliver()
    confirm = link_in(last_mail_to(smtp, "walker@example.com"), rf"{live_url}/confirm/\S+")
    page.goto(confirm)
    page.get_by_role("heading", name="Please confirm").wait_for()
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()

    response = client.post("/api/v1/messages", json={
        "to": "walker@example.com", "template": "newsletter", "category": "promotional",
        "topic": "news", "data": {"headline": "Spring sale", "intro": "Strings half price."},
    }, headers=auth)
    assert response.status_code == 202
    deliver()
    newsletter = last_mail_to(smtp, "walker@example.com")
    preferences = link_in(newsletter, rf"{live_url}/preferences/\S+")

    page.goto(preferences)
    page.get_by_label("Deals").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved").wait_for()
    state = client.get("/api/v1/contacts/walker@example.com", headers=auth).get_json()
    assert state["subscriptions"] == {"news": "subscribed", "deals": "subscribed"}

    unsubscribe = newsletter["List-Unsubscribe"].strip("<>")
    page.goto(unsubscribe)
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    state = client.get("/api/v1/contacts/walker@example.com", headers=auth).get_json()
    assert state["subscriptions"] == {"news": "unsubscribed", "deals": "subscribed"}


def test_the_confirmation_page_works_on_a_phone_without_javascript(browser, live_url, smtp,
                                                                   deliver, client, auth,
                                                                   make_topic):
    """A GET of the mailed link confirms nothing; the page fits a 390 px phone and its one
    button confirms with JavaScript off; the sharing box starts unticked."""
    make_topic("news", double_opt_in=True)
    client.post("/api/v1/contacts", json={"email": "phone@example.com", "topics": ["news"],
                                          "partner_sharing": True}, headers=auth)
    deliver()
    confirm = link_in(last_mail_to(smtp, "phone@example.com"), rf"{live_url}/confirm/\S+")
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  java_script_enabled=False, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(confirm)
        page.get_by_role("heading", name="Please confirm").wait_for()
        state = client.get("/api/v1/contacts/phone@example.com", headers=auth).get_json()
        assert state["subscriptions"] == {"news": "pending"}
        box = page.get_by_label(re.compile("share my email address"))
        assert not box.is_checked()
        button = page.get_by_role("button", name="Confirm my subscription")
        right = button.bounding_box()
        assert right is not None and right["x"] + right["width"] <= 390
        assert box.bounding_box()["x"] + box.bounding_box()["width"] <= 390
        button.tap()
        page.get_by_role("heading", name="You are subscribed").wait_for()
    finally:
        context.close()
    state = client.get("/api/v1/contacts/phone@example.com", headers=auth).get_json()
    assert state["subscriptions"] == {"news": "subscribed"}
    assert state["partner_sharing"] is False
