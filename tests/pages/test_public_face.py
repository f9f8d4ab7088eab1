"""The public face: a front page, error pages of the service in plain words (the API keeps
its JSON envelope), and pages that fit a phone (checked in a browser by tests/e2e)."""

from __future__ import annotations

import re
from pathlib import Path

from mailer.admin import services as admin
from mailer.extensions import db


def test_the_front_page_is_a_page_with_a_way_to_subscribe(client, make_topic):
    make_topic("news", public=True)
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'href="/subscribe"' in page and "News" in page


def test_a_missing_page_is_a_page_of_the_service_in_plain_words(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert '<header class="brand">' in page and "Page not found" in page
    assert "The requested URL" not in page  # Werkzeug's wording


def test_a_form_without_its_csrf_token_gets_a_page_saying_what_to_do(client, make_topic):
    make_topic("news", public=True)
    response = client.post("/subscribe", data={"email": "a@example.com", "topics": ["news"]})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert '<header class="brand">' in page and "Reload the page" in page


def test_too_many_requests_is_a_page_too(app):
    from werkzeug.exceptions import TooManyRequests

    from mailer.errors import handle_http_exception

    # The limiter raises TooManyRequests; its page comes from the one handler of the app.
    with app.test_request_context("/subscribe", method="POST"):
        page, status = handle_http_exception(TooManyRequests())
    assert status == 429
    assert "Too many tries" in page and '<header class="brand">' in page
    with app.test_request_context("/api/v1/contacts", method="POST"):
        response = handle_http_exception(TooManyRequests())
    assert response.status_code == 429 and response.get_json()["error"]["code"] == "rate_limited"


def test_an_error_inside_a_page_is_a_500_page_with_an_incident(app, client, monkeypatch):
    from mailer.pages import routes

    def broken(**_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(routes, "list_topics", broken)
    response = client.get("/")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong" in page and re.search(r"Incident [0-9a-f]{12}", page)
    assert "boom" not in page and "Traceback" not in page


def test_the_api_keeps_its_json_envelope(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_marketer_sees_a_forbidden_page_of_the_console(client):
    from tests.admin.test_console import PASSWORD, log_in

    admin.create_user("m@shop.example", PASSWORD, "marketer")
    db.session.commit()
    log_in(client, "m@shop.example")
    response = client.get("/admin/api-keys")
    assert response.status_code == 403


def test_the_focus_ring_reaches_three_to_one(app):
    css = Path(app.static_folder, "style.css").read_text()
    ring = re.search(r":focus-visible \{ outline: 3px solid (#[0-9a-f]{6})", css).group(1)

    def luminance(hex_colour: str) -> float:
        def channel(c: int) -> float:
            c = c / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    for background in ("#ffffff", "#f6f7f9"):  # the page and the main box
        light, dark = sorted([luminance(ring), luminance(background)], reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 3
    assert "input[type=url]" in css  # Tell-a-Friend's item URL is styled as the other inputs
