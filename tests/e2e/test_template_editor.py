"""The console's template editor and preview on a 390 px phone, in Debian's Chromium: a
template written, previewed (desktop and phone frames, the real footer) and saved, and no
page wider than the phone."""

from __future__ import annotations

import pytest

from mailer.admin import services as admin
from mailer.extensions import db

pytestmark = pytest.mark.slow

MARKETER = "marketer@shop.example"
PASSWORD = "a long enough passphrase"
LONG_LINK = "https://shop.example/" + "averylongpathsegment" * 15


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_the_editor_and_preview_work_on_a_phone_without_horizontal_scroll(page, live_url,
                                                                         tmp_path):
    admin.create_user(MARKETER, PASSWORD)
    db.session.commit()
    page.goto(f"{live_url}/admin/login")
    page.get_by_label("Email address").fill(MARKETER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview").wait_for()

    page.goto(f"{live_url}/admin/templates")
    page.get_by_role("link", name="New template").click()
    page.get_by_role("heading", name="New template").wait_for()
    assert page_width(page) <= 390
    page.get_by_label("Name (used by the API and campaigns)").fill("weekly")
    page.get_by_label("Subject").fill("{{ headline }}")
    page.get_by_label("Body", exact=True).fill(
        "# {{ headline }}\n\nThis week: {{ intro }}\n\n" + LONG_LINK + "\n")
    assert page.get_by_label("Text part", exact=True).is_hidden()  # made from the body unless asked
    page.get_by_label("Variable").first.fill("headline")
    page.get_by_label("Label").first.fill("Headline")
    page.get_by_label("Example").first.fill("Fresh strings")
    page.get_by_label("Variable").nth(1).fill("intro")
    page.get_by_label("Label").nth(1).fill("Introduction")
    page.get_by_label("Example").nth(1).fill("New sets from Berlin")
    page.get_by_role("button", name="Preview").click()

    page.get_by_role("heading", name="Preview").wait_for()
    assert page.locator(".subject").inner_text() == "Fresh strings"
    phone = page.frame_locator("iframe.phone")
    phone.get_by_role("heading", name="Fresh strings").wait_for()
    phone.get_by_role("link", name="Unsubscribe").wait_for()  # the real footer
    desktop = page.frame_locator("iframe.mail-frame").first
    desktop.get_by_text("Music Store, 1 High Street").wait_for()
    assert page_width(page) <= 390
    for frame in page.locator("iframe.mail-frame").all():
        box = frame.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    # Inside the phone frame the mail fits too, its long link included.
    mail = page.locator("iframe.phone").element_handle().content_frame()
    assert mail.evaluate("document.documentElement.scrollWidth") <= mail.evaluate(
        "document.documentElement.clientWidth")
    page.screenshot(path=str(tmp_path / "template-editor-phone.png"), full_page=True)

    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved as version 1.").wait_for()
    page.get_by_role("heading", name="Template weekly").wait_for()
    page.frame_locator("iframe.phone").get_by_role("heading", name="Fresh strings").wait_for()
    assert page_width(page) <= 390
    page.goto(f"{live_url}/admin/templates")
    page.get_by_text("written here, version 1").wait_for()
    assert page_width(page) <= 390

    # The compose form with the template's fields and the segment builder fits too.
    page.goto(f"{live_url}/admin/campaigns/new?template=weekly")
    page.get_by_label("Headline", exact=True).wait_for()
    page.get_by_label("Introduction").wait_for()
    assert page.get_by_label("Attribute").count() == 3
    assert page_width(page) <= 390
