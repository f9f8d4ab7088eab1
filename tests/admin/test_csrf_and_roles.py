"""Every form of the console sections refuses a POST without its CSRF token, every page
needs a login, and a marketer (no users, keys or webhooks) can do the whole job."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentEvent
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.topics.models import Topic
from tests.admin.sections import marketer_console, text
from tests.admin.test_console import draft


@pytest.fixture
def world(make_topic):
    make_topic("news", double_opt_in=False)
    contacts.upsert("ann@example.com", topics=["news"])
    db.session.commit()
    return draft()


def state() -> tuple:
    db.session.expire_all()
    return (
        db.session.scalar(select(func.count()).select_from(Topic)),
        db.session.scalar(select(Topic.name)),
        db.session.scalar(select(Topic.retired_at)),
        db.session.scalar(select(func.count()).select_from(Contact)),
        db.session.scalar(select(func.count()).select_from(ConsentEvent)),
        db.session.scalar(select(func.count()).select_from(Message)),
        db.session.scalar(select(Campaign.status)),
    )


def test_every_form_of_the_sections_needs_its_csrf_token(client, world):
    console = marketer_console(client)
    campaign = f"/admin/campaigns/{world}"
    before = state()
    for path, data in [
        ("/admin/topics/new", {"slug": "x", "name": "X"}),
        ("/admin/topics/news", {"name": "Renamed"}),
        ("/admin/topics/news/retire", {}),
        ("/admin/contacts", {"email": "ann@example.com"}),
        ("/admin/contacts/new", {"email": "b@example.com", "topics": "news", "source": "x"}),
        ("/admin/contacts/import", {"file": (io.BytesIO(b"email\nc@example.com\n"), "a.csv"),
                                    "topic": "news", "source": "x", "confirm": "y"}),
        ("/admin/contacts/export", {"email": "ann@example.com"}),
        ("/admin/contacts/erase", {"email": "ann@example.com"}),
        ("/admin/contacts/erase/confirmed", {"email": "ann@example.com"}),
        (f"{campaign}/test", {"to": "marketer@shop.example"}),
        (f"{campaign}/schedule", {"send_at": "2030-01-01T09:00", "timezone": "UTC"}),
        (f"{campaign}/schedule/confirmed", {"send_at_utc": "2030-01-01T09:00:00+00:00"}),
        (f"{campaign}/send-now", {}),
        (f"{campaign}/cancel", {}),
        (f"{campaign}/pause", {}),
    ]:
        response = console.post(path, data=data)
        assert response.status_code == 400, path
        assert "ann@example.com" not in text(response)
    assert state() == before


@pytest.mark.parametrize("path", [
    "/admin/topics", "/admin/topics/new", "/admin/topics/news", "/admin/topics/news/retire",
    "/admin/contacts", "/admin/contacts/new", "/admin/contacts/import", "/admin/statistics",
])
def test_the_sections_need_a_login(client, world, path):
    response = client.get(path)
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "/admin/login")


def test_a_marketer_reaches_every_section_but_not_the_keys(client, world):
    console = marketer_console(client)
    campaign = f"/admin/campaigns/{world}"
    for path in ("/admin/", "/admin/topics", "/admin/topics/new", "/admin/topics/news",
                 "/admin/topics/news/retire", "/admin/contacts", "/admin/contacts/new",
                 "/admin/contacts/import", "/admin/statistics", campaign,
                 f"{campaign}/send-now", f"{campaign}/cancel", f"{campaign}/statistics"):
        assert console.get(path).status_code == 200, path
    assert console.get("/admin/api-keys").status_code == 403
    assert "/admin/api-keys" not in text(console.get("/admin/"))
