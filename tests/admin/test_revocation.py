"""Revocation, over real HTTP: console sessions end server-side (logout, disable-user, a new
password), and API keys are listed and revoked from the CLI and the console."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update
from werkzeug.serving import make_server

from mailer.admin import services as admin
from mailer.admin.models import AdminUser, Role
from mailer.apikeys import services as apikeys
from mailer.apikeys.models import ApiKey
from mailer.database import utcnow
from mailer.extensions import db
from tests.processes import run_flask
from tests.sql_events import listening

ADMIN = "admin@shop.example"
PASSWORD = "a long enough passphrase"
NEW_PASSWORD = "another long passphrase"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The app served over real HTTP in a thread: every request has its own app context, so
    nothing (session, Flask-Login's user) is shared with the test or between requests."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture
def user() -> AdminUser:
    made = admin.create_user(ADMIN, PASSWORD)
    db.session.commit()
    return made


def browser(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, follow_redirects=False, timeout=30)


def token_of(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    match = CSRF.search(page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in(client: httpx.Client, email: str = ADMIN, password: str = PASSWORD) -> int:
    token = token_of(client, "/admin/login")
    return client.post("/admin/login", data={"email": email, "password": password,
                                             "csrf_token": token}).status_code


def logged_in(client: httpx.Client) -> bool:
    """Whether the client's session opens the console (a stranger is sent to the login)."""
    response = client.get("/admin/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def copy_of(client: httpx.Client, base: str) -> httpx.Client:
    """Another browser holding a copy of the client's session cookie (a stolen cookie)."""
    thief = browser(base)
    thief.cookies.set("session", client.cookies["session"], domain="127.0.0.1")
    return thief


def committed() -> None:
    """End the test's own transaction, so it reads what the server's requests committed."""
    db.session.commit()
    db.session.expire_all()


# -- console sessions ----------------------------------------------------------------------------

def test_logout_ends_every_session_of_the_user_a_copied_cookie_included(live_url, user):
    with browser(live_url) as ann:
        assert log_in(ann) == 302
        thief = copy_of(ann, live_url)
        assert logged_in(thief)  # a copied cookie works as long as the session lives

        token = token_of(ann, "/admin/")
        assert ann.post("/admin/logout", data={"csrf_token": token}).status_code == 302
        assert not logged_in(thief)
        assert not logged_in(ann)
        # Logging in again starts a new session that works.
        assert log_in(ann) == 302
        assert logged_in(ann)
        assert not logged_in(thief)
        thief.close()


def test_disable_user_ends_the_sessions_at_once_and_refuses_logins(app, live_url, user):
    with browser(live_url) as ann, browser(live_url) as other_device:
        assert log_in(ann) == 302 and log_in(other_device) == 302
        assert logged_in(ann) and logged_in(other_device)

        result = run_flask(app, "mailer", "disable-user", "Admin@Shop.Example")
        assert result.returncode == 0, result.stderr
        assert ADMIN not in result.stdout + result.stderr  # ids in output, never the address

        assert not logged_in(ann) and not logged_in(other_device)
        # The right password no longer opens the console, with the same answer as a wrong one.
        assert log_in(ann) == 422
        assert not logged_in(ann)


def test_disable_user_of_an_unknown_address_fails(app):
    result = run_flask(app, "mailer", "disable-user", "nobody@shop.example")
    assert result.returncode == 1
    assert "no console user" in result.stderr


def test_a_new_password_ends_every_session_and_the_old_password(app, live_url, user):
    with browser(live_url) as ann:
        assert log_in(ann) == 302
        thief = copy_of(ann, live_url)
        result = run_flask(app, "mailer", "set-password", ADMIN, stdin=NEW_PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        assert not logged_in(ann) and not logged_in(thief)
        assert log_in(ann, password=PASSWORD) == 422
        assert log_in(ann, password=NEW_PASSWORD) == 302
        assert logged_in(ann) and not logged_in(thief)
        thief.close()


def test_set_password_refuses_a_short_one_and_keeps_the_sessions(app, live_url, user):
    with browser(live_url) as ann:
        assert log_in(ann) == 302
        result = run_flask(app, "mailer", "set-password", ADMIN, stdin="short\n")
        assert result.returncode == 1 and "at least 12" in result.stderr
        assert logged_in(ann)


def test_a_session_from_before_session_versions_is_ended(user):
    """Sessions made by the previous version carry the bare user id ("7")."""
    assert admin.load_user(str(user.id)) is None
    assert admin.load_user(f"{user.id}.{user.session_version}") is user
    assert admin.load_user("not-a-number.1") is None


# -- API keys: the CLI ---------------------------------------------------------------------------

def test_list_api_keys_shows_each_key_but_never_the_key_or_its_hash(app):
    live, secret = apikeys.issue("shop", ["topics:read"])
    gone, _ = apikeys.issue("old")
    gone.revoked_at = utcnow()
    db.session.commit()
    result = run_flask(app, "mailer", "list-api-keys")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "name", "scopes", "created", "last used", "revoked"]
    shop = next(line.split("\t") for line in lines if "\tshop\t" in line)
    assert shop[0] == str(live.id) and shop[2] == "topics:read"
    assert shop[3].endswith("UTC") and shop[4] == "never" and shop[5] == "-"
    old = next(line.split("\t") for line in lines if "\told\t" in line)
    assert old[5].endswith("UTC")
    assert secret not in result.stdout and live.key_hash not in result.stdout


def test_revoke_api_key_from_the_cli_is_refused_by_the_running_service_within_seconds(
        app, live_url):
    row, secret = apikeys.issue("shop", ["topics:read"])
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=live_url, timeout=30) as service:
        assert service.get("/api/v1/topics", headers=headers).status_code == 200  # now cached
        result = run_flask(app, "mailer", "revoke-api-key", str(row.id))
        assert result.returncode == 0, result.stderr
        assert "revoked" in result.stdout
        revoked_at = time.monotonic()
        while service.get("/api/v1/topics", headers=headers).status_code == 200:
            assert time.monotonic() - revoked_at < apikeys.CACHE_SECONDS + 2, "still accepted"
            time.sleep(0.2)
        assert service.get("/api/v1/topics", headers=headers).status_code == 401

    again = run_flask(app, "mailer", "revoke-api-key", str(row.id))
    assert again.returncode == 0 and "revoked already" in again.stdout
    unknown = run_flask(app, "mailer", "revoke-api-key", str(row.id + 1000))
    assert unknown.returncode == 1 and "no API key" in unknown.stderr


def test_last_use_is_recorded_at_most_once_a_minute_per_key(app, live_url):
    row, secret = apikeys.issue("shop", ["topics:read"])
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    writes: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        # The service's conditional write (the test's own UPDATE below has no condition).
        if statement.startswith("UPDATE api_keys") and "last_used_at IS NULL" in statement:
            writes.append(statement)

    with listening(count), httpx.Client(base_url=live_url, timeout=30) as service:
        # A request that is refused (no scope) still counts as a use of the key.
        assert service.post("/api/v1/topics", headers=headers, json={}).status_code == 403
        committed()
        first = db.session.get(ApiKey, row.id).last_used_at
        assert first is not None and utcnow() - first < dt.timedelta(seconds=30)
        assert len(writes) == 1

        for _ in range(3):  # read from the database again each time: still no write
            apikeys.forget_cached_keys()
            assert service.get("/api/v1/topics", headers=headers).status_code == 200
        assert len(writes) == 1

        # A minute later (the stored time is older than the resolution): one write more.
        db.session.execute(update(ApiKey).where(ApiKey.id == row.id)
                           .values(last_used_at=utcnow() - dt.timedelta(minutes=2))
                           .execution_options(synchronize_session=False))
        committed()
        apikeys.forget_cached_keys()
        assert service.get("/api/v1/topics", headers=headers).status_code == 200
        assert len(writes) == 2
    committed()
    assert utcnow() - db.session.get(ApiKey, row.id).last_used_at < dt.timedelta(seconds=30)


# -- API keys: the console -----------------------------------------------------------------------

def test_an_admin_revokes_a_key_in_the_console_after_a_confirmation(live_url, user):
    row, secret = apikeys.issue("shop", ["topics:read"])
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    with browser(live_url) as ann, httpx.Client(base_url=live_url, timeout=30) as service:
        assert service.get("/api/v1/topics", headers=headers).status_code == 200
        assert log_in(ann) == 302
        listing = ann.get("/admin/api-keys")
        assert listing.status_code == 200
        assert "shop" in listing.text and "topics:read" in listing.text
        assert secret not in listing.text and row.key_hash not in listing.text
        last_used = re.search(rf'id="key-{row.id}".*?class="last-used">(.*?)</dd>',
                              listing.text, re.S).group(1)
        assert "UTC" in last_used  # the request above was recorded

        confirm = ann.get(f"/admin/api-keys/{row.id}/revoke")
        assert confirm.status_code == 200 and "Revoke this key" in confirm.text
        committed()
        assert db.session.get(ApiKey, row.id).revoked_at is None  # asking changes nothing

        # Without the CSRF token nothing happens.
        assert ann.post(f"/admin/api-keys/{row.id}/revoke").status_code == 400
        assert service.get("/api/v1/topics", headers=headers).status_code == 200

        token = token_of(ann, f"/admin/api-keys/{row.id}/revoke")
        done = ann.post(f"/admin/api-keys/{row.id}/revoke", data={"csrf_token": token})
        assert done.status_code == 302 and done.headers["Location"] == "/admin/api-keys"
        # The console's process refuses it at once (another process within seconds).
        assert service.get("/api/v1/topics", headers=headers).status_code == 401
        after = ann.get("/admin/api-keys").text
        assert "is revoked" in after
        assert f"/admin/api-keys/{row.id}/revoke" not in after
    committed()
    assert db.session.get(ApiKey, row.id).revoked_at is not None


def test_a_marketer_cannot_revoke_over_http(live_url):
    admin.create_user("m@shop.example", PASSWORD, Role.MARKETER)
    row, _secret = apikeys.issue("shop")
    db.session.commit()
    with browser(live_url) as marketer:
        assert log_in(marketer, "m@shop.example") == 302
        token = token_of(marketer, "/admin/suppressions")
        refused = marketer.post(f"/admin/api-keys/{row.id}/revoke", data={"csrf_token": token})
        assert refused.status_code == 403 and "Admins only" in refused.text
    committed()
    assert db.session.get(ApiKey, row.id).revoked_at is None
