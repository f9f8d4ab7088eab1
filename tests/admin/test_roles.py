"""Console roles: admins run users, API keys and webhooks; marketers get a 403 page there."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailer.admin import services as admin
from mailer.admin.models import AdminUser, Role
from mailer.apikeys import services as apikeys
from mailer.apikeys.models import ApiKey
from mailer.extensions import db
from tests.admin.test_console import PASSWORD, log_in
from tests.pages.helpers import csrf_token
from tests.processes import run_flask

ADMIN = "admin@shop.example"
MARKETER = "marketer@shop.example"


@pytest.fixture
def users() -> None:
    admin.create_user(ADMIN, PASSWORD)
    admin.create_user(MARKETER, PASSWORD, Role.MARKETER)
    db.session.commit()


def role_of(email: str) -> str:
    db.session.expire_all()
    return db.session.scalar(select(AdminUser.role).where(AdminUser.email == email))


def test_create_user_makes_an_admin_unless_told_and_a_marketer_with_role(app):
    first = run_flask(app, "mailer", "create-user", "ann@shop.example",
                      stdin="correct horse battery\n")
    second = run_flask(app, "mailer", "create-user", "bob@shop.example", "--role", "marketer",
                       stdin="correct horse battery\n")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "(admin)" in first.stdout and "(marketer)" in second.stdout
    assert role_of("ann@shop.example") == "admin"
    assert role_of("bob@shop.example") == "marketer"


def test_create_user_refuses_an_unknown_role(app):
    result = run_flask(app, "mailer", "create-user", "ann@shop.example", "--role", "owner",
                       stdin="correct horse battery\n")
    assert result.returncode == 2
    assert "owner" in result.stderr
    assert db.session.scalar(select(AdminUser)) is None


def test_a_marketer_gets_a_403_page_on_the_api_keys_and_no_link_to_them(client, users):
    key, _secret = apikeys.issue("shop")
    db.session.commit()
    assert log_in(client, MARKETER).status_code == 302
    overview = client.get("/admin/").get_data(as_text=True)
    assert "/admin/api-keys" not in overview

    page = client.get("/admin/api-keys")
    assert page.status_code == 403
    body = page.get_data(as_text=True)
    assert "Admins only" in body and "shop" not in body.split("<main", 1)[1]
    assert page.mimetype == "text/html"
    assert client.get(f"/admin/api-keys/{key.id}/revoke").status_code == 403

    # Not even with a valid CSRF token from a page the marketer may see.
    token = csrf_token(client, "/admin/suppressions")
    refused = client.post(f"/admin/api-keys/{key.id}/revoke", data={"csrf_token": token})
    assert refused.status_code == 403
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).revoked_at is None


def test_an_admin_sees_the_api_keys(client, users):
    apikeys.issue("shop")
    db.session.commit()
    assert log_in(client, ADMIN).status_code == 302
    assert "/admin/api-keys" in client.get("/admin/").get_data(as_text=True)
    page = client.get("/admin/api-keys")
    assert page.status_code == 200
    assert "shop" in page.get_data(as_text=True)


def test_a_stranger_is_sent_to_the_login_from_an_admin_page(client):
    response = client.get("/admin/api-keys")
    assert response.status_code == 302
    assert "/admin/login" in response.headers["Location"]
