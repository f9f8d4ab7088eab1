"""Driving the pages as a browser without JavaScript would: read the form, post it back."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

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


def last_confirm_path(email: str | None = None) -> str:
    """The path of the confirmation link in the newest confirmation mail (to `email`)."""
    from sqlalchemy import select

    from mailer.extensions import db
    from mailer.messages.models import Message

    query = select(Message).where(Message.category == "confirmation",
                                  Message.template == "confirm_subscription")
    if email is not None:
        query = query.where(Message.to_address == email)
    message = db.session.scalar(query.order_by(Message.id.desc()))
    assert message is not None, "no confirmation mail"
    return urlsplit(message.data["confirm_url"]).path


def press_confirm(client: FlaskClient, path: str, *, share: bool = False):
    """Open the confirmation page at `path` and press its button (ticking the partner-sharing
    box when `share`), as a person does."""
    data = {"partner_sharing": "y"} if share else {}
    return submit(client, path, data)
