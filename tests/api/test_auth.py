"""API authentication: a bearer key is required (401) and must hold the endpoint's scope (403)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mailer.apikeys import services as apikeys
from mailer.database import utcnow
from mailer.extensions import db
from tests.conftest import key_with

KNOWN = "known@example.com"

# Every endpoint behind a key: (method, path, a valid JSON body or None, the scope it needs).
ENDPOINTS = [
    ("POST", "/api/v1/contacts", {"email": "new@example.com"}, "contacts:write"),
    ("GET", f"/api/v1/contacts/{KNOWN}", None, "contacts:read"),
    ("PATCH", f"/api/v1/contacts/{KNOWN}", {"attributes": {"a": "b"}}, "contacts:write"),
    ("DELETE", f"/api/v1/contacts/{KNOWN}", None, "contacts:write"),
    ("GET", f"/api/v1/contacts/{KNOWN}/export", None, "contacts:read"),
    ("GET", "/api/v1/topics", None, "topics:read"),
    ("POST", "/api/v1/topics", {"slug": "news", "name": "News"}, "topics:write"),
]
IDS = [f"{method} {path}" for method, path, _, _ in ENDPOINTS]
WITH_BODY = [e for e in ENDPOINTS if e[2] is not None]
WITH_BODY_IDS = [f"{method} {path}" for method, path, _, _ in WITH_BODY]


def call(client, method: str, path: str, body: Any, headers: dict[str, str] | None = None):
    return client.open(path, method=method, json=body, headers=headers or {})


def error_of(response, status: int, code: str, extra: frozenset[str] = frozenset()):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"} | extra
    assert body["error"]["code"] == code
    return body["error"]


def unauthorized(response) -> dict[str, Any]:
    return error_of(response, 401, "unauthorized")


def forbidden(response) -> dict[str, Any]:
    return error_of(response, 403, "forbidden", extra=frozenset({"scope"}))


def issue(*scopes: str):
    row, key = apikeys.issue("auth-test", list(scopes) or None)
    db.session.commit()
    return row, {"Authorization": f"Bearer {key}"}


def bearer_key(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def seed(client, auth) -> None:
    """A known contact, so that every endpoint would succeed with the right key."""
    response = client.post("/api/v1/contacts", json={"email": KNOWN, "attributes": {"a": "x"}},
                           headers=auth)
    assert response.status_code == 201


def unchanged(client, auth) -> None:
    """Nothing a refused request could have done happened."""
    contact = client.get(f"/api/v1/contacts/{KNOWN}", headers=auth)
    assert contact.status_code == 200
    assert contact.get_json()["attributes"] == {"a": "x"}
    assert client.get("/api/v1/contacts/new@example.com", headers=auth).status_code == 404
    assert client.get("/api/v1/topics", headers=auth).get_json() == []


# --- a valid key ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
def test_a_key_with_only_the_needed_scope_is_let_in(client, auth, method, path, body, scope):
    seed(client, auth)
    response = call(client, method, path, body, key_with(scope))
    assert response.status_code in (200, 201, 204), response.get_data(as_text=True)


def test_the_scheme_is_case_insensitive(client, api_key):
    response = client.get("/api/v1/topics", headers={"Authorization": f"bearer {api_key}"})
    assert response.status_code == 200


# --- 401: no key, unknown key, wrong scheme, revoked key ------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
def test_no_key_is_401(client, auth, method, path, body, scope):
    seed(client, auth)
    unauthorized(call(client, method, path, body))
    unchanged(client, auth)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
def test_an_unknown_key_is_401(client, auth, method, path, body, scope):
    seed(client, auth)
    forged = {"Authorization": "Bearer mk_" + "A" * 43}
    unauthorized(call(client, method, path, body, forged))
    unchanged(client, auth)


@pytest.mark.parametrize(
    "header",
    [
        "{key}",
        "Basic {basic}",
        "Token {key}",
        "Bearer",
        "Bearer ",
        "Bearer {key}x",
        "Bearer {short}",
        "Bearer {upper}",
        "Bearer " + "mk_" + "x" * 300,
    ],
    ids=["bare-key", "basic", "token", "scheme-only", "scheme-space", "key-plus-one",
         "key-minus-one", "key-upper-case", "very-long"],
)
def test_a_malformed_authorization_header_is_401(client, auth, api_key, header):
    seed(client, auth)
    basic = base64.b64encode(f"user:{api_key}".encode()).decode()
    value = header.format(key=api_key, basic=basic, short=api_key[:-1], upper=api_key.upper())
    unauthorized(client.get(f"/api/v1/contacts/{KNOWN}", headers={"Authorization": value}))
    unauthorized(client.post("/api/v1/topics", json={"slug": "news", "name": "News"},
                             headers={"Authorization": value}))
    unchanged(client, auth)


@pytest.mark.parametrize(
    "where",
    [
        {"query_string": {"api_key": "{key}"}},
        {"query_string": {"access_token": "{key}"}},
        {"headers": {"X-Api-Key": "{key}"}},
    ],
    ids=["query-api_key", "query-access_token", "x-api-key-header"],
)
def test_a_key_outside_the_authorization_header_is_not_accepted(client, api_key, where):
    kwargs = {
        name: {k: v.format(key=api_key) for k, v in values.items()}
        for name, values in where.items()
    }
    unauthorized(client.get("/api/v1/topics", **kwargs))


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
def test_a_revoked_key_is_401(client, auth, method, path, body, scope):
    seed(client, auth)
    row, headers = issue()
    assert client.get("/api/v1/topics", headers=headers).status_code == 200  # it worked before
    row.revoked_at = utcnow()
    db.session.commit()
    error = unauthorized(call(client, method, path, body, headers))
    assert bearer_key(headers) not in error["message"]
    unchanged(client, auth)


def test_the_401_does_not_tell_whether_a_contact_exists(client, auth):
    seed(client, auth)
    known = client.get(f"/api/v1/contacts/{KNOWN}")
    unknown = client.get("/api/v1/contacts/nobody@example.com")
    assert unauthorized(known) == unauthorized(unknown)


def test_a_401_names_the_bearer_scheme(client):
    response = client.get("/api/v1/topics")
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize(("method", "path", "body", "scope"), WITH_BODY, ids=WITH_BODY_IDS)
@pytest.mark.parametrize("bad", [{"unknown_field": 1}, "not json"], ids=["unknown-field", "bad"])
def test_no_key_is_401_whatever_the_body(client, auth, method, path, body, scope, bad):
    seed(client, auth)
    if isinstance(bad, dict):
        response = call(client, method, path, {**body, **bad})
    else:
        response = client.open(path, method=method, data=bad, content_type="application/json")
    unauthorized(response)


# --- 403: a key without the scope -----------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
def test_a_key_without_the_scope_is_403_naming_it(client, auth, method, path, body, scope):
    seed(client, auth)
    _row, headers = issue(*[s for s in apikeys.SCOPES if s != scope])
    error = forbidden(call(client, method, path, body, headers))
    assert scope in error["message"]
    assert error["scope"] == scope
    unchanged(client, auth)


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [e for e in ENDPOINTS if e[3].endswith(":write")],
    ids=[i for i, e in zip(IDS, ENDPOINTS, strict=True) if e[3].endswith(":write")],
)
def test_a_read_scope_does_not_allow_writing(client, auth, method, path, body, scope):
    seed(client, auth)
    read_scope = scope.replace(":write", ":read")
    forbidden(call(client, method, path, body, key_with(read_scope)))
    unchanged(client, auth)


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"),
    [e for e in ENDPOINTS if e[3].endswith(":read")],
    ids=[i for i, e in zip(IDS, ENDPOINTS, strict=True) if e[3].endswith(":read")],
)
def test_a_write_scope_does_not_allow_reading(client, auth, method, path, body, scope):
    seed(client, auth)
    forbidden(call(client, method, path, body, key_with(scope.replace(":read", ":write"))))


def test_the_403_does_not_tell_whether_a_contact_exists(client, auth):
    seed(client, auth)
    headers = key_with("topics:read")
    known = forbidden(client.get(f"/api/v1/contacts/{KNOWN}", headers=headers))
    unknown = forbidden(client.get("/api/v1/contacts/nobody@example.com", headers=headers))
    assert known == unknown


@pytest.mark.parametrize(("method", "path", "body", "scope"), WITH_BODY, ids=WITH_BODY_IDS)
def test_a_key_without_the_scope_is_403_whatever_the_body(client, auth, method, path, body,
                                                         scope):
    seed(client, auth)
    _row, headers = issue(*[s for s in apikeys.SCOPES if s != scope])
    forbidden(call(client, method, path, {**body, "unknown_field": 1}, headers))
