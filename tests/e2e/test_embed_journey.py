"""The embeddable signup form in Chromium, on a shop page served from another origin: a plain
form POST with JavaScript off, a fetch() with JavaScript on, and a site that is not listed.

The service runs on 127.0.0.1; the shop's pages on `localhost` (another site to the browser,
so the service's cookies are not even sent along) on ports of their own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from mailer.contacts.models import Contact
from mailer.extensions import db
from tests.e2e.test_signup_journey import last_mail_to, link_in

pytestmark = pytest.mark.slow

FETCH_SCRIPT = """
<p id="result">not sent</p>
<script>
document.querySelector("form.mailer-signup").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    const response = await fetch(form.action, {
      method: "POST", body: new FormData(form), headers: {"Accept": "application/json"}});
    document.getElementById("result").textContent =
      response.status + " " + JSON.stringify(await response.json());
  } catch (error) {
    document.getElementById("result").textContent = "blocked " + error.name;
  }
});
</script>
"""


class ShopSite:
    """A second web server: the shop's product pages, each holding the service's snippet."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ShopSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()


@pytest.fixture
def shops(app) -> Iterator[tuple[ShopSite, ShopSite]]:
    """The shop (listed in MAILER_EMBED_ORIGINS) and another site (not listed)."""
    with ShopSite() as shop, ShopSite() as stranger:
        saved = app.config["MAILER_EMBED_ORIGINS"]
        app.config["MAILER_EMBED_ORIGINS"] = [shop.origin]
        try:
            yield shop, stranger
        finally:
            app.config["MAILER_EMBED_ORIGINS"] = saved


def product_page(snippet: str, script: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Piano</title></head>"
            f"<body><h1>A piano</h1>{snippet}{script}</body></html>")


def contact_state(client, auth, email: str) -> dict:
    """The contact's JSON, waiting a little: the signup's work runs once the answer is sent,
    so the browser may show the answer a moment before the contact is written."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get(f"/api/v1/contacts/{email}", headers=auth)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.get_json()
            return response.get_json()
        time.sleep(0.1)


def contacts() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Contact))


def test_plain_post_with_javascript_off_from_the_shop(browser, live_url, shops, client, auth,
                                                     make_topic, smtp, deliver):
    make_topic("news", double_opt_in=True)
    shop, _stranger = shops
    snippet = client.get("/embed/subscribe?topics=news").get_data(as_text=True)
    shop.pages["/piano"] = product_page(snippet)

    context = browser.new_context(java_script_enabled=False, viewport={"width": 390,
                                                                         "height": 844})
    page = context.new_page()
    try:
        page.goto(f"{shop.origin}/piano")
        page.get_by_label("Your email address").fill("walker@example.com")
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        assert page.url == f"{live_url}/subscribe"
    finally:
        context.close()
    state = contact_state(client, auth, "walker@example.com")
    assert state["subscriptions"] == {"news": "pending"}
    deliver()
    assert link_in(last_mail_to(smtp, "walker@example.com"), rf"{live_url}/confirm/\S+")


def test_fetch_from_the_shop_gets_json_and_a_stranger_is_refused(page, live_url, shops, client,
                                                                 auth, make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    shop, stranger = shops
    snippet = client.get("/embed/subscribe?topics=news,deals").get_data(as_text=True)
    shop.pages["/piano"] = product_page(snippet, FETCH_SCRIPT)
    stranger.pages["/copy"] = product_page(snippet, FETCH_SCRIPT)
    stranger.pages["/plain"] = product_page(snippet)

    page.goto(f"{shop.origin}/piano")
    page.get_by_label("Your email address").fill("fetcher@example.com")
    page.get_by_label("Deals").uncheck()
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_function("document.getElementById('result').textContent !== 'not sent'")
    status, _, body = page.locator("#result").text_content().partition(" ")
    assert status == "200" and json.loads(body)["status"] == "check_inbox"
    assert page.url == f"{shop.origin}/piano"  # the shop's page stayed
    state = contact_state(client, auth, "fetcher@example.com")
    assert state["subscriptions"] == {"news": "pending"}
    before = contacts()

    # The same snippet copied onto a site that is not listed: fetch is blocked by CORS (the
    # 403 carries no CORS header), and the plain form POST gets the 403 page.
    page.goto(f"{stranger.origin}/copy")
    page.get_by_label("Your email address").fill("copied@example.com")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_function("document.getElementById('result').textContent !== 'not sent'")
    assert page.locator("#result").text_content().startswith("blocked")
    page.goto(f"{stranger.origin}/plain")
    page.get_by_label("Your email address").fill("copied@example.com")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Subscribe").click()
    assert navigation.value.status == 403
    assert contacts() == before
    assert client.get("/api/v1/contacts/copied@example.com", headers=auth).status_code == 404


def test_console_report_and_snippet_pages_fit_a_phone(page, live_url, app, make_topic):
    from mailer.admin import services as admin
    from tests.reports.test_audience import subscribers

    make_topic("news", double_opt_in=False)
    make_topic("deals-and-offers-for-musicians", double_opt_in=False)
    subscribers(12, ["news"], country="DE")
    admin.create_user("ann@shop.example", "a long enough passphrase")
    db.session.commit()
    page.goto(f"{live_url}/admin/login")
    page.get_by_label("Email address").fill("ann@shop.example")
    page.get_by_label("Password").fill("a long enough passphrase")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview").wait_for()

    page.get_by_role("navigation").get_by_role("link", name="Audience report").click()
    page.get_by_label("Group by").select_option("attribute")
    page.get_by_label('Attribute name (for "Attribute")').first.fill("country")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("heading", name="By country").wait_for()
    assert page.get_by_role("cell", name="DE").is_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename.startswith("audience-country-")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.get_by_role("navigation").get_by_role("link", name="Signup form").click()
    page.get_by_label("Copy this HTML into your page").wait_for()
    assert "<form" in page.get_by_label("Copy this HTML into your page").input_value()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
