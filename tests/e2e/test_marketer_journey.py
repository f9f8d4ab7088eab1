"""A marketer's whole job in a real browser, at desktop and phone widths: make a topic, add a
contact by hand and more by CSV, write a campaign on a file template, confirm it, see every
recipient get exactly one mail through a real SMTP server, then read the aggregate
statistics. No page may scroll sideways; a screenshot of each step is kept."""

from __future__ import annotations

import collections
import email
import email.policy
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.admin import services as admin
from mailer.admin.models import Role
from mailer.campaigns.models import Campaign
from mailer.devtools.capture import write_capture
from mailer.extensions import db
from tests.delivery.helpers import run_worker_until_idle

pytestmark = pytest.mark.slow

MARKETER = "marketer@shop.example"
PASSWORD = "a long enough passphrase"
CSV = "email,country\nbob@example.com,DE\nnot an address,FR\ncy@example.com,AT\n"
WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def campaign_status(public_id: str) -> str:
    db.session.remove()
    return db.session.scalar(select(Campaign.status).where(Campaign.public_id == public_id))


def run_worker_until_finished(app, smtp, public_id: str) -> None:
    """A worker until the campaign is finished, in a thread (Playwright owns this one's loop)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with app.app_context():
                run_worker_until_idle(app, smtp.url, timeout=60,
                                      until=lambda: campaign_status(public_id) == "finished")
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(90)
    if errors:
        raise errors[0]


class Steps:
    """Check each page for sideways scrolling and keep a screenshot of it."""

    def __init__(self, page, directory: Path) -> None:
        self.page, self.directory, self.count = page, directory, 0

    def check(self, name: str) -> None:
        self.page.wait_for_load_state("load")
        widths = self.page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]")
        self.count += 1
        self.page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"),
                             full_page=True)
        assert widths[0] <= widths[1], f"{name}: {widths[0]} px wide in {widths[1]} px"


def compose(page, name: str) -> None:
    """The compose form: a file template, then a field for each of its variables."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Topic").select_option(label="News")
    page.get_by_label("Template", exact=True).select_option("newsletter")
    # Choosing the template brings its variables as fields (the page reloads with them).
    page.get_by_label("Headline (also the subject)").fill("Spring sale")
    page.get_by_label("Introduction").fill("Guitars half price.")
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("heading", name="Preview").wait_for()
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
    steps = Steps(page, shots)
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
        assert page.locator("dd[data-count=created]").inner_text() == "2"
        assert page.locator("table.bad-lines td.num").inner_text() == "3"
        steps.check("imported")

        # Find one of them: state and history with its source.
        page.get_by_role("navigation").get_by_role("link", name="Contacts").click()
        page.get_by_label("Email address").fill("cy@example.com")
        page.get_by_role("button", name="Find").click()
        page.locator("table.history").get_by_text("loyalty cards").wait_for()
        steps.check("contact-found")

        # A campaign on a file template, confirmed, sent.
        page.get_by_role("navigation").get_by_role("link", name="Campaigns").click()
        page.get_by_role("link", name="New campaign").click()
        compose(page, f"Spring {width}")
        page.get_by_role("heading", name=f"Spring {width}").wait_for()
        public_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        assert "It would reach 3 addresses" in page.locator("#audience").inner_text()
        steps.check("campaign-draft")
        page.get_by_role("link", name="Send now…").click()
        assert page.locator("#confirm-audience").inner_text() == "3"
        steps.check("confirm-send")
        page.get_by_role("button", name="Send it now").click()
        page.get_by_text("Sending starts within seconds.").wait_for()
        run_worker_until_finished(app, smtp, public_id)
        page.locator("#progress [data-field=status]").get_by_text("finished").wait_for(
            timeout=20_000)
        assert page.locator("dd[data-count=sent]").inner_text() == "3"
        assert page.locator("#controls").count() == 0  # nothing left to do
        steps.check("campaign-finished")

        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
        assert received == {"ann@example.com": 1, "bob@example.com": 1, "cy@example.com": 1}
        subjects = {email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]
                    for m in smtp.messages}
        assert subjects == {"Spring sale"}

        # The aggregate statistics.
        page.get_by_role("link", name="Statistics: outcomes over time").click()
        page.locator("svg.chart").wait_for()
        assert page.locator("svg.chart polyline").count() == 3  # sent, failed, suppressed
        assert page.locator("dd[data-count=sent]").inner_text() == "3"
        steps.check("campaign-statistics")
        page.get_by_role("navigation").get_by_role("link", name="Statistics").click()
        page.locator("svg.chart").first.wait_for()
        assert "@example.com" not in page.content()
        steps.check("statistics")

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
