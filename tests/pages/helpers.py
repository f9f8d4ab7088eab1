"""Driving the pages as a browser without JavaScript would: read the form, post it back."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on the page at `path`."""
    page = client.get(path)
    assert page.status_code in (200, 410), page.status_code
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return match.group(1)


def submit(client: FlaskClient, path: str, data: dict, *, form_page: str | None = None):
    """POST `data` with the CSRF token of the form at `form_page` (default `path`)."""
    token = csrf_token(client, form_page or path)
    return client.post(path, data={**data, "csrf_token": token})
