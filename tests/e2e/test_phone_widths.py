"""No page of the service, every console section included, is wider than a 390 px phone
(CONTRACT.md): each is loaded in Chromium at that width, logged in as an admin, who sees
every section."""

from __future__ import annotations

import pytest

from mailer.admin import services as admin
from mailer.admin.models import Role
from mailer.extensions import db

pytestmark = pytest.mark.slow

ADMIN = "boss@shop.example"
PASSWORD = "a long enough passphrase"
PAGES = ["/admin/", "/admin/topics", "/admin/contacts", "/admin/templates",
         "/admin/templates/new", "/admin/campaigns", "/admin/campaigns/new", "/admin/notices",
         "/admin/statistics", "/admin/reports/audience", "/admin/embed", "/admin/suppressions",
         "/admin/users", "/admin/api-keys", "/admin/webhooks", "/admin/account",
         "/", "/subscribe", "/unsubscribe", "/tell-a-friend", "/no-such-page"]


def test_no_page_is_wider_than_a_phone(browser, live_url, make_topic):
    make_topic("news", double_opt_in=False)
    admin.create_user(ADMIN, PASSWORD, Role.ADMIN)
    db.session.commit()
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        page.goto(f"{live_url}/admin/")
        page.get_by_label("Email address").fill(ADMIN)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Overview").wait_for()
        too_wide = {}
        for path in PAGES:
            page.goto(f"{live_url}{path}")
            page.wait_for_load_state("load")
            content, viewport = page.evaluate(
                "() => [document.documentElement.scrollWidth, window.innerWidth]")
            if content > viewport:
                too_wide[path] = content
        assert not too_wide, too_wide
    finally:
        context.close()
