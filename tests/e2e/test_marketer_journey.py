"""A marketer's whole job in a real browser, at desktop and phone widths: make a topic, add a
contact by hand and more by CSV, write a template in the console's editor, compose a campaign
on it for a segment of the topic (country = DE, counted before sending), confirm it, see every
recipient in the segment get exactly one mail with the unsubscribe footer through a real SMTP
server and nobody outside it get any, then read the aggregate statistics. No page may scroll
sideways and no page script may fail; a screenshot of each step is kept.

With MAILER_SCREENSHOT_DIR set, the desktop run also writes the README's console tour
screenshots there (1280x800 viewport shots, named as in docs/console/)."""

from __future__ import annotations

import collections
import email
import email.policy
import os
from pathlib import Path

import pytest

from mailer.admin import services as admin
from mailer.admin.models import Role
from mailer.devtools.capture import write_capture
from mailer.extensions import db
from tests.e2e.helpers import run_worker_until_finished

pytestmark = pytest.mark.slow

MARKETER = "marketer@shop.example"
PASSWORD = "a long enough passphrase"
# Two of the four addresses are in Germany: the segment country = DE picks bob and dee, and
# leaves ann (added by hand, no country) and cy (AT) out.
CSV = ("email,country\nbob@example.com,DE\nnot an address,FR\ncy@example.com,AT\n"
       "dee@example.com,DE\n")
IN_SEGMENT = {"bob@example.com", "dee@example.com"}
EVERYONE = IN_SEGMENT | {"ann@example.com", "cy@example.com"}
WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


class Steps:
    """Check each page for sideways scrolling and keep a screenshot of it; with `docs` set,
    also write the named viewport shots the README shows."""

    def __init__(self, page, directory: Path, docs: Path | None = None) -> None:
        self.page, self.directory, self.docs, self.count = page, directory, docs, 0

    def check(self, name: str, doc: str | None = None) -> None:
        self.page.wait_for_load_state("load")
        widths = self.page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]")
        self.count += 1
        self.page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"),
                             full_page=True)
        if doc and self.docs is not None:
            self.page.screenshot(path=str(self.docs / f"{doc}.png"))
        assert widths[0] <= widths[1], f"{name}: {widths[0]} px wide in {widths[1]} px"


def write_template(page) -> None:
    """The console's editor: a promotional Markdown template reading one variable."""
    page.get_by_label("Name (used by the API and campaigns)").fill("spring-news")
    page.get_by_label("Kind of mail").select_option("promotional")
    page.get_by_label("Subject").fill("{{ headline }}")
    page.get_by_label("Markdown").check()
    page.get_by_label("Body", exact=True).fill(
        "# {{ headline }}\n\nThis week in the shop: **every guitar half price**.\n")
    page.get_by_label("Variable").first.fill("headline")
    page.get_by_label("Label").first.fill("Headline")
    page.get_by_label("Example").first.fill("Fresh strings")
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("heading", name="Preview").wait_for()
    page.frame_locator("iframe.mail-frame").first.get_by_role(
        "heading", name="Fresh strings").wait_for()


def compose(page, steps: Steps, name: str) -> None:
    """The compose form: the console-written template, its variable as a field, and the
    segment country = DE counted before anything is created."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Topic").select_option(label="News")
    page.get_by_label("Template", exact=True).select_option("spring-news")
    # Choosing the template brings its variables as fields (the page reloads with them).
    page.get_by_label("Headline", exact=True).fill("Spring sale")
    page.get_by_label("Attribute").first.fill("country")
    page.get_by_label("Value").first.fill("DE")
    page.get_by_role("button", name="Count recipients").click()
    count = page.locator("#recipient-count")
    count.wait_for()
    # The whole topic has four subscribers; the segment holds the two in Germany.
    assert count.locator("strong").inner_text() == str(len(IN_SEGMENT))
    assert page.get_by_label("Value").first.input_value() == "DE"  # the count kept the builder
    page.locator("#segment").scroll_into_view_if_needed()
    steps.check("campaign-segment-count", doc="compose-segment")
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("heading", name="Preview").wait_for()
    assert page.locator(".preview .subject").inner_text() == "Spring sale"
    page.frame_locator("iframe.mail").get_by_role("heading", name="Spring sale").wait_for()
    page.get_by_role("button", name="Create campaign").click()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_a_marketers_whole_job(browser, width, live_url, smtp, app, tmp_path):
    admin.create_user(MARKETER, PASSWORD, Role.MARKETER)
    db.session.commit()
    context = browser.new_context(viewport=WIDTHS[width])
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    shots = tmp_path / f"screenshots-{width}"
    shots.mkdir()
    docs = os.environ.get("MAILER_SCREENSHOT_DIR")
    if docs and width == "desktop":
        Path(docs).mkdir(parents=True, exist_ok=True)
    steps = Steps(page, shots, Path(docs) if docs and width == "desktop" else None)
    try:
        page.goto(f"{live_url}/")
        steps.check("front-page")
        page.goto(f"{live_url}/no-such-page")
        page.get_by_role("heading", name="Page not found").wait_for()
        steps.check("not-found")

        page.goto(f"{live_url}/admin/")
        page.get_by_label("Email address").fill(MARKETER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Overview").wait_for()
        steps.check("overview")

        # A topic.
        page.get_by_role("navigation").get_by_role("link", name="Topics").click()
        page.get_by_role("link", name="New topic").click()
        page.get_by_label("Slug").fill("news")
        page.get_by_label("Name").fill("News")
        page.get_by_label("Double opt-in").uncheck()  # the shop collected consent itself
        page.get_by_label("Public").check()
        page.get_by_label("Welcome text").fill("Welcome to the shop's news.")
        steps.check("new-topic")
        page.get_by_role("button", name="Create topic").click()
        page.get_by_text("Topic 'News' created.").wait_for()

        # A contact by hand.
        page.get_by_role("navigation").get_by_role("link", name="Contacts").click()
        page.get_by_role("link", name="Add a contact").click()
        page.get_by_label("Email address").fill("ann@example.com")
        page.get_by_label("News").check()
        page.get_by_label("Where consent was given").fill("shop counter")
        page.get_by_role("button", name="Add").click()
        page.get_by_text("Added and subscribed.").wait_for()
        assert page.locator('td[data-state="subscribed"]').count() == 1
        steps.check("contact-added")

        # More by CSV, with a bad line reported.
        page.get_by_role("navigation").get_by_role("link", name="Contacts").click()
        page.get_by_role("link", name="Import a CSV file").click()
        page.get_by_label("CSV file").set_input_files(files=[{
            "name": "customers.csv", "mimeType": "text/csv", "buffer": CSV.encode()}])
        page.get_by_label("Topic", exact=True).select_option(label="News")
        page.get_by_label("Where consent was given").fill("loyalty cards")
        page.get_by_label("Every address in the file").check()
        page.get_by_role("button", name="Import").click()
        page.locator("#import-report").wait_for()
        assert page.locator("dd[data-count=created]").inner_text() == "3"
        assert page.locator("table.bad-lines td.num").inner_text() == "3"
        steps.check("imported")

        # Find one of them: state and history with its source.
        page.get_by_role("navigation").get_by_role("link", name="Contacts").click()
        page.get_by_label("Email address").fill("cy@example.com")
        page.get_by_role("button", name="Find").click()
        page.locator("table.history").get_by_text("loyalty cards").wait_for()
        steps.check("contact-found")

        # A template written in the console.
        page.get_by_role("navigation").get_by_role("link", name="Templates").click()
        page.get_by_role("link", name="New template").click()
        page.get_by_role("heading", name="New template").wait_for()
        write_template(page)
        steps.check("template-preview")
        page.get_by_role("button", name="Save").click()
        page.get_by_text("Saved as version 1.").wait_for()
        steps.check("template-saved")

        # A campaign on it for a segment, confirmed, sent.
        page.get_by_role("navigation").get_by_role("link", name="Campaigns").click()
        page.get_by_role("link", name="New campaign").click()
        compose(page, steps, f"Spring {width}")
        page.get_by_role("heading", name=f"Spring {width}").wait_for()
        public_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert "It would reach 2 addresses" in page.locator("#audience").inner_text()
        steps.check("campaign-draft")
        page.get_by_role("link", name="Send now…").click()
        assert page.locator("#confirm-audience").inner_text() == str(len(IN_SEGMENT))
        steps.check("confirm-send")
        page.get_by_role("button", name="Send it now").click()
        page.get_by_text("Sending starts within seconds.").wait_for()
        run_worker_until_finished(app, smtp, public_id)
        page.locator("#progress [data-field=status]").get_by_text("finished").wait_for(
            timeout=20_000)
        assert page.locator("dd[data-count=sent]").inner_text() == str(len(IN_SEGMENT))
        assert page.locator("#controls").count() == 0  # nothing left to do
        steps.check("campaign-finished", doc="campaign-sent")

        # Exactly one mail to each address in the segment, none to anyone outside it.
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
        assert received == {address: 1 for address in IN_SEGMENT}
        assert not (set(received) & (EVERYONE - IN_SEGMENT))
        for message in smtp.messages:
            mail = email.message_from_bytes(message.data, policy=email.policy.default)
            assert mail["Subject"] == "Spring sale"
            assert mail["List-Unsubscribe"].startswith(f"<{live_url}/")
            text = mail.get_body(preferencelist=("plain",)).get_content()
            html = mail.get_body(preferencelist=("html",)).get_content()
            assert "every guitar half price" in text  # the console-written body
            assert f"Unsubscribe: {live_url}/" in text  # the footer, with a working link
            assert ">Unsubscribe<" in html

        # The aggregate statistics.
        page.get_by_role("link", name="Statistics: outcomes over time").click()
        page.locator("svg.chart").wait_for()
        assert page.locator("svg.chart polyline").count() == 3  # sent, failed, suppressed
        assert page.locator("dd[data-count=sent]").inner_text() == str(len(IN_SEGMENT))
        steps.check("campaign-statistics")
        page.get_by_role("navigation").get_by_role("link", name="Statistics").click()
        page.locator("svg.chart").first.wait_for()
        assert "@example.com" not in page.content()
        steps.check("statistics", doc="statistics")

        # The development mailbox with a long unsubscribe link fits the page too.
        capture_dir = tmp_path / "capture"
        capture_dir.mkdir()
        app.config["MAILER_CAPTURE_DIR"] = str(capture_dir)
        capture_id = write_capture(capture_dir, "news@shop.example", ["ann@example.com"],
                                   smtp.messages[0].data)
        page.goto(f"{live_url}/dev/mail/")
        steps.check("dev-mailbox")
        page.goto(f"{live_url}/dev/mail/{capture_id}")
        steps.check("dev-mail")
    finally:
        app.config.pop("MAILER_CAPTURE_DIR", None)
        context.close()
    assert len(list(shots.glob("*.png"))) == steps.count
    assert script_errors == []
