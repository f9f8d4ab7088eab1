"""Helpers of the console section tests: a marketer logged in, and forms posted as the page
would post them (with the page's CSRF token)."""

from __future__ import annotations

import re

from mailer.admin import services as admin
from mailer.admin.models import Role
from mailer.extensions import db
from tests.admin.test_console import PASSWORD, log_in
from tests.pages.helpers import csrf_token

MARKETER = "marketer@shop.example"


def marketer_console(client):
    """The client logged in as a marketer (the role without users, keys or webhooks)."""
    admin.create_user(MARKETER, PASSWORD, Role.MARKETER)
    db.session.commit()
    assert log_in(client, MARKETER).status_code == 302
    return client


def post(client, path: str, data: dict | None = None, *, form_page: str = "/admin/", **kwargs):
    """POST `data` with a CSRF token of the session (any console page's form carries it)."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, form_page)},
                       **kwargs)


def text(response) -> str:
    return response.get_data(as_text=True)


def fresh() -> None:
    db.session.expire_all()


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" type="hidden" value="([^"]*)"', page) or re.search(
        rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no hidden {name}"
    return match.group(1)
