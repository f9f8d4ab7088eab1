"""The console's audience report: the API's report as a table and as CSV."""

from __future__ import annotations

import csv
import io

from tests.admin.test_console import console, log_in, user  # noqa: F401  (fixtures)
from tests.conftest import key_with
from tests.reports.test_audience import subscribers


def test_the_report_page_shows_the_apis_report_and_downloads_it_as_csv(console, make_topic):  # noqa: F811
    make_topic("news", double_opt_in=False)
    subscribers(12, ["news"], country="DE")
    subscribers(11, ["news"], country="=cmd")  # a spreadsheet formula, as text
    subscribers(6, ["news"], country="FR")
    subscribers(5, ["news"], country="AT")
    page = console.get("/admin/reports/audience?first=attribute&first_attribute=country")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<td>DE</td><td class=\"num\">12</td>" in text
    assert "FR" not in text and "AT" not in text  # withheld: under k
    assert 'href="/admin/reports/audience"' in console.get("/admin/").get_data(as_text=True)

    download = console.get("/admin/reports/audience.csv?by=attribute:country")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.get_data(as_text=True))))
    assert rows == [["country", "count"], ["'=cmd", "11"], ["DE", "12"], ["(other)", "11"],
                    ["(total)", "34"]]
    api = console.get("/api/v1/reports/audience?by=attribute:country",
                      headers=key_with("reports:read")).get_json()
    assert api["groups"] == [{"key": {"country": "=cmd"}, "count": 11},
                             {"key": {"country": "DE"}, "count": 12}]
    assert (api["other"], api["total"]) == (11, 34)


def test_two_dimensions_and_a_bad_name(console, make_topic):  # noqa: F811
    make_topic("news", double_opt_in=False)
    subscribers(10, ["news"], country="DE")
    page = console.get("/admin/reports/audience?first=topic&second=attribute"
                       "&second_attribute=country")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<td>news</td><td>DE</td><td class=\"num\">10</td>" in text
    bad = console.get("/admin/reports/audience?first=attribute&first_attribute=a%20b")
    assert bad.status_code == 422
    assert "attribute:NAME" in bad.get_data(as_text=True)


def test_strangers_are_sent_to_the_login(client):
    for path in ("/admin/reports/audience", "/admin/reports/audience.csv?by=topic"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_the_signup_form_snippet_per_topic_set(app, console, make_topic):  # noqa: F811
    make_topic("news")
    make_topic("deals")
    make_topic("internal", public=False)
    page = console.get("/admin/embed").get_data(as_text=True)
    assert "MAILER_EMBED_ORIGINS" in page and "No site may carry the form yet" in page
    assert 'value="news" checked' in page and 'value="deals" checked' in page
    assert "internal" not in page
    app.config["MAILER_EMBED_ORIGINS"] = ["https://shop.example"]
    try:
        page = console.get("/admin/embed?topics=deals").get_data(as_text=True)
    finally:
        app.config["MAILER_EMBED_ORIGINS"] = []
    assert "<code>https://shop.example</code>" in page
    snippet = page[page.index('<textarea id="snippet"'):page.index("</textarea>")]
    # The snippet is shown as text to copy: escaped, with the one topic chosen.
    assert "&lt;form" in snippet and "<form" not in snippet
    assert "value=&#34;deals&#34;" in snippet and "news" not in snippet
    assert "/embed/subscribe?topics=deals" in page
