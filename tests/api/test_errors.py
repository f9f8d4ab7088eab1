"""Bad input on every API endpoint: each refusal is the one JSON error envelope, never HTML.

Envelope: {"error": {"code", "message", "fields"}} with a 4xx status (500 for a bug, without
a stack trace). Refused requests store nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailer.campaigns.models import Campaign
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.topics.models import Topic

CONTACTS = "/api/v1/contacts"
TOPICS = "/api/v1/topics"
KNOWN = "known@example.com"
CARD = "4111 1111 1111 1111"  # a Visa test number: passes the Luhn check
MB = 1024 * 1024


def assert_envelope(response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is exactly the JSON error envelope with this status; return the error."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/json", text
    assert "<html" not in text.lower() and "traceback" not in text.lower()
    body = json.loads(text)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    if code is not None:
        assert error["code"] == code
    return error


def assert_fields_error(response, *names: str, code: str = "validation_error") -> dict[str, Any]:
    """A 422 error (validation_error unless told) naming each field in `names`."""
    error = assert_envelope(response, 422, code)
    for name in names:
        assert name in error["fields"], error
    return error


def committed(model) -> int:
    """Rows of `model` that were committed (a fresh connection, not the test's session)."""
    db.session.remove()
    with db.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(model))


def known_contact(client, auth, **extra: Any) -> dict[str, Any]:
    response = client.post(CONTACTS, json={"email": KNOWN, **extra}, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def raw(client, method: str, path: str, data: str | bytes, headers: dict[str, str],
        content_type: str = "application/json"):
    return client.open(path, method=method, data=data, content_type=content_type,
                       headers=headers)


# Every endpoint that reads a JSON body: (method, path, a valid body).
BODY_ENDPOINTS = [
    ("POST", CONTACTS, {"email": "new@example.com"}),
    ("PATCH", f"{CONTACTS}/{KNOWN}", {"attributes": {"a": "b"}}),
    ("POST", TOPICS, {"slug": "news", "name": "News"}),
]
BODY_IDS = [f"{m} {p}" for m, p, _ in BODY_ENDPOINTS]

# Every endpoint that takes an address in its path.
EMAIL_PATH_ENDPOINTS = [
    ("GET", CONTACTS + "/{}"),
    ("PATCH", CONTACTS + "/{}"),
    ("DELETE", CONTACTS + "/{}"),
    ("GET", CONTACTS + "/{}/export"),
]
EMAIL_PATH_IDS = [f"{m} {p}" for m, p in EMAIL_PATH_ENDPOINTS]


# --- wrong types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": 5}, "email"),
        ({"email": None}, "email"),
        ({"email": ["a@example.com"]}, "email"),
        ({"email": "a@example.com", "topics": "news"}, "topics"),
        ({"email": "a@example.com", "topics": {"news": True}}, "topics"),
        ({"email": "a@example.com", "topics": [5]}, "topics"),
        ({"email": "a@example.com", "topics": [None]}, "topics"),
        ({"email": "a@example.com", "topics": [""]}, "topics"),
        ({"email": "a@example.com", "topics": ["n" * 65]}, "topics"),
        ({"email": "a@example.com", "topics": [f"t{i}" for i in range(101)]}, "topics"),
        ({"email": "a@example.com", "partner_sharing": "yes"}, "partner_sharing"),
        ({"email": "a@example.com", "partner_sharing": "true"}, "partner_sharing"),
        ({"email": "a@example.com", "partner_sharing": 1}, "partner_sharing"),
        ({"email": "a@example.com", "partner_sharing": 0}, "partner_sharing"),
        ({"email": "a@example.com", "source": 5}, "source"),
        ({"email": "a@example.com", "source": "s" * 201}, "source"),
        ({"email": "a@example.com", "attributes": "country=DE"}, "attributes"),
        ({"email": "a@example.com", "attributes": ["DE"]}, "attributes"),
        ({"email": "a@example.com", "attributes": {"nested": {"a": 1}}}, "attributes"),
        ({"email": "a@example.com", "attributes": {"list": [1, 2]}}, "attributes"),
        ({"email": "a@example.com", "attributes": {"": "empty name"}}, "attributes"),
        ({"email": "a@example.com", "attributes": {"n" * 65: "long name"}}, "attributes"),
        ({"email": "a@example.com", "attributes": {"long": "v" * 501}}, "attributes"),
        ({"email": "a@example.com", "attributes": {f"a{i}": i for i in range(51)}}, "attributes"),
    ],
)
def test_post_contact_with_a_wrong_type_is_422_naming_the_field(client, auth, body, field):
    assert_fields_error(client.post(CONTACTS, json=body, headers=auth), field)
    assert committed(Contact) == 0


def test_post_contact_reports_every_bad_field_at_once(client, auth):
    response = client.post(
        CONTACTS, json={"email": 5, "topics": "news", "partner_sharing": "yes"}, headers=auth
    )
    assert_fields_error(response, "email", "topics", "partner_sharing")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_attribute_numbers_are_422(client, auth, literal):
    data = '{"email": "a@example.com", "attributes": {"score": ' + literal + "}}"
    assert_fields_error(raw(client, "POST", CONTACTS, data, auth), "attributes")
    assert committed(Contact) == 0


def test_post_contact_without_email_is_422(client, auth):
    assert_fields_error(client.post(CONTACTS, json={"topics": []}, headers=auth), "email")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"attributes": "x"}, "attributes"),
        ({"attributes": None}, "attributes"),
        ({"attributes": {"deep": {"a": 1}}}, "attributes"),
        ({"attributes": {f"a{i}": i for i in range(51)}}, "attributes"),
        ({"partner_sharing": "no"}, "partner_sharing"),
        ({"partner_sharing": None}, "partner_sharing"),
        pytest.param({"partner_sharing": 1}, "partner_sharing"),
        ({"subscriptions": ["news"]}, "subscriptions"),
        ({"subscriptions": "news"}, "subscriptions"),
        ({"subscriptions": {"news": True}}, "subscriptions"),
        ({"subscriptions": {"news": "pending"}}, "subscriptions"),
        ({"subscriptions": {"news": "SUBSCRIBED"}}, "subscriptions"),
        ({"subscriptions": {"": "subscribed"}}, "subscriptions"),
        ({"subscriptions": {"nope": "subscribed"}}, "subscriptions"),
    ],
)
def test_patch_contact_with_bad_input_is_422_and_changes_nothing(
    client, auth, make_topic, body, field
):
    make_topic("news", double_opt_in=False)
    before = known_contact(client, auth, attributes={"country": "DE"})
    assert_fields_error(client.patch(f"{CONTACTS}/{KNOWN}", json=body, headers=auth), field)
    after = client.get(f"{CONTACTS}/{KNOWN}", headers=auth).get_json()
    assert after["attributes"] == before["attributes"]
    assert after["subscriptions"] == before["subscriptions"] == {}
    assert after["partner_sharing"] is False


def test_patch_merging_past_the_attribute_limit_is_422(client, auth):
    known_contact(client, auth, attributes={f"a{i}": i for i in range(50)})
    response = client.patch(f"{CONTACTS}/{KNOWN}", json={"attributes": {"one_more": 1}},
                            headers=auth)
    assert_fields_error(response, "attributes")
    attributes = client.get(f"{CONTACTS}/{KNOWN}", headers=auth).get_json()["attributes"]
    assert "one_more" not in attributes
    assert len(attributes) == 50


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": 5, "name": "News"}, "slug"),
        ({"slug": None, "name": "News"}, "slug"),
        ({"slug": "news", "name": 5}, "name"),
        ({"slug": "news", "name": None}, "name"),
        ({"slug": "news", "name": ""}, "name"),
        ({"slug": "news", "name": "n" * 201}, "name"),
        ({"slug": "news", "name": "News", "description": 5}, "description"),
        ({"slug": "news", "name": "News", "description": "d" * 2001}, "description"),
        ({"slug": "news", "name": "News", "double_opt_in": "yes"}, "double_opt_in"),
        pytest.param({"slug": "news", "name": "News", "double_opt_in": 0}, "double_opt_in",
                     ),
        ({"slug": "news", "name": "News", "double_opt_in": None}, "double_opt_in"),
        ({"slug": "news", "name": "News", "public": "true"}, "public"),
        pytest.param({"slug": "news", "name": "News", "public": 1}, "public"),
        ({"name": "News"}, "slug"),
        ({"slug": "news"}, "name"),
    ],
)
def test_post_topic_with_a_wrong_type_is_422_naming_the_field(client, auth, body, field):
    assert_fields_error(client.post(TOPICS, json=body, headers=auth), field)
    assert committed(Topic) == 0


def test_a_slug_with_a_trailing_newline_is_refused(client, auth):
    assert_fields_error(client.post(TOPICS, json={"slug": "news\n", "name": "N"}, headers=auth),
                        "slug")
    assert committed(Topic) == 0


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        (CONTACTS, r'{"email": "a@example.com", "source": "a\u0000b"}', "source"),
        (CONTACTS, r'{"email": "a@example.com", "source": "a\ud800b"}', "source"),
        (TOPICS, r'{"slug": "news", "name": "News\u0000"}', "name"),
        (TOPICS, r'{"slug": "news", "name": "News\udfff"}', "name"),
        (TOPICS, r'{"slug": "news", "name": "News", "description": "\u0000"}', "description"),
    ],
    ids=["source-nul", "source-surrogate", "name-nul", "name-surrogate", "description-nul"],
)
def test_text_the_database_cannot_store_is_422_not_500(client, auth, path, data, field):
    assert_fields_error(raw(client, "POST", path, data, auth), field, code="invalid_text")


# --- unknown fields -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), BODY_ENDPOINTS, ids=BODY_IDS)
def test_an_unknown_field_is_422_naming_it(client, auth, method, path, body):
    known_contact(client, auth)
    response = client.open(path, method=method, json={**body, "colour": "red"}, headers=auth)
    error = assert_fields_error(response, "colour")
    assert list(error["fields"]) == ["colour"]
    assert committed(Topic) == 0
    assert committed(Contact) == 1


def test_patch_cannot_change_the_address(client, auth):
    known_contact(client, auth)
    response = client.patch(f"{CONTACTS}/{KNOWN}", json={"email": "other@example.com"},
                            headers=auth)
    assert_fields_error(response, "email")
    assert client.get(f"{CONTACTS}/{KNOWN}", headers=auth).status_code == 200
    assert client.get(f"{CONTACTS}/other@example.com", headers=auth).status_code == 404


# --- invalid addresses ----------------------------------------------------------------------

INVALID_ADDRESSES = [
    "",
    "   ",
    "plainaddress",
    "@example.com",
    "ann@",
    "ann@@example.com",
    "ann@example",
    "ann@exa mple.com",
    "ann@-example.com",
    "ann..lee@example.com",
    ".ann@example.com",
    "Ann <ann@example.com>",
    "ann@example.com, bob@example.com",
    "ann@" + "d" * 250 + ".com",
    "a" * 64 + "@" + ("d" * 60 + ".") * 3 + "d" * 10 + ".com",  # 262 characters
]


@pytest.mark.parametrize("address", INVALID_ADDRESSES)
def test_post_contact_with_an_invalid_address_is_422_naming_email(client, auth, address):
    assert_fields_error(client.post(CONTACTS, json={"email": address}, headers=auth), "email")
    assert committed(Contact) == 0


@pytest.mark.parametrize(("method", "template"), EMAIL_PATH_ENDPOINTS, ids=EMAIL_PATH_IDS)
@pytest.mark.parametrize("address", ["plainaddress", "ann@example", "ann@@example.com"])
def test_an_invalid_address_in_the_path_is_422_naming_email(
    client, auth, method, template, address
):
    body = {} if method == "PATCH" else None
    response = client.open(template.format(address), method=method, json=body, headers=auth)
    assert_fields_error(response, "email")


@pytest.mark.parametrize(("method", "template"), EMAIL_PATH_ENDPOINTS, ids=EMAIL_PATH_IDS)
def test_an_unknown_address_in_the_path_is_404(client, auth, method, template):
    body = {} if method == "PATCH" else None
    response = client.open(template.format("nobody@example.com"), method=method, json=body,
                           headers=auth)
    assert_envelope(response, 404, "contact_not_found")


# --- invalid JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), BODY_ENDPOINTS, ids=BODY_IDS)
@pytest.mark.parametrize(
    "data",
    ['{"email": ', "{'email': 'a@example.com'}", "{bad", '{"a": 1,}', b'{"email": "\xff"}'],
    ids=["truncated", "single-quotes", "garbage", "trailing-comma", "not-utf8"],
)
def test_invalid_json_is_400_invalid_json(client, auth, method, path, body, data):
    known_contact(client, auth)
    assert_envelope(raw(client, method, path, data, auth), 400, "invalid_json")
    assert committed(Topic) == 0
    assert committed(Contact) == 1


@pytest.mark.parametrize(("method", "path", "body"), BODY_ENDPOINTS, ids=BODY_IDS)
@pytest.mark.parametrize("data", ["[1, 2]", '"text"', "42", "true"])
def test_a_json_body_that_is_not_an_object_is_422(client, auth, method, path, body, data):
    known_contact(client, auth)
    response = raw(client, method, path, data, auth)
    assert_envelope(response, 422, "validation_error")
    assert committed(Topic) == 0
    assert committed(Contact) == 1


def test_deeply_nested_json_is_400_not_500(client, auth):
    data = "[" * 100_000 + "]" * 100_000
    assert_envelope(raw(client, "POST", CONTACTS, data, auth), 400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_not_declared_as_json_is_415(client, auth, content_type):
    data = json.dumps({"email": "a@example.com"})
    response = client.post(CONTACTS, data=data, headers={**auth, **(
        {"Content-Type": content_type} if content_type else {})})
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert committed(Contact) == 0


def _json_operations(client) -> dict[tuple[str, str], bool]:
    """Every API operation that may carry a body, and whether the OpenAPI document says it
    reads JSON: the test follows the document, so a new endpoint is covered as it is added."""
    spec = client.get("/api/v1/openapi.json").get_json()
    found = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method.upper() in {"POST", "PUT", "PATCH"}:
                content = operation.get("requestBody", {}).get("content", {})
                concrete = path.replace("{email}", KNOWN).replace("{campaign_id}", "1") \
                               .replace("{message_id}", "1")
                found[(method.upper(), concrete)] = "application/json" in content
    return found


def test_every_json_endpoint_refuses_a_text_plain_body_with_415(client, auth):
    operations = _json_operations(client)
    assert sum(operations.values()) >= 9  # contacts x2, topics, messages x2, referrals, ...
    assert operations[("POST", "/api/v1/inbound")] is False
    for (method, path), reads_json in operations.items():
        response = raw(client, method, path, '{"a": 1}', auth, content_type="text/plain")
        if reads_json:
            assert_envelope(response, 415, "unsupported_media_type")
        else:  # inbound reads message/rfc822; campaign actions read no body
            assert response.status_code != 415, (method, path)


def test_a_bodyless_request_without_a_content_type_is_not_415(client, auth):
    """Nothing to label: the schema says what is missing, as before."""
    response = client.post(CONTACTS, headers=auth)
    assert_fields_error(response, "email")


def test_json_with_a_charset_or_a_json_suffix_is_read(client, auth):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = raw(client, "POST", CONTACTS, json.dumps({"email": "cs@example.com"}), auth,
                       content_type=content_type)
        assert response.status_code in (200, 201), content_type


# --- routing: unknown route 404, wrong method 405 -------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/",
        "/api/v2/contacts",
        "/api/v1/topics/",
        "/api/v1/topics/news",
        f"{CONTACTS}/{KNOWN}/nope",
        f"{CONTACTS}/",
    ],
)
def test_an_unknown_route_is_a_json_404(client, auth, path):
    assert_envelope(client.get(path, headers=auth), 404, "not_found")
    assert_envelope(client.post(path, json={}, headers=auth), 404, "not_found")


def test_an_unknown_route_is_a_json_404_without_a_key_too(client):
    assert_envelope(client.get("/api/v1/nope"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", CONTACTS, {"POST"}),
        ("DELETE", CONTACTS, {"POST"}),
        ("PUT", f"{CONTACTS}/{KNOWN}", {"GET", "PATCH", "DELETE"}),
        ("POST", f"{CONTACTS}/{KNOWN}", {"GET", "PATCH", "DELETE"}),
        ("POST", f"{CONTACTS}/{KNOWN}/export", {"GET"}),
        ("DELETE", TOPICS, {"GET", "POST"}),
        ("PATCH", TOPICS, {"GET", "POST"}),
        ("POST", "/api/v1/openapi.json", {"GET"}),
    ],
)
def test_a_wrong_method_is_a_json_405_with_allow(client, auth, method, path, allowed):
    response = client.open(path, method=method, json={}, headers=auth)
    assert_envelope(response, 405, "method_not_allowed")
    advertised = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= advertised
    assert not advertised & ({"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed)


# --- body size ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), BODY_ENDPOINTS, ids=BODY_IDS)
def test_a_body_over_one_megabyte_is_413(client, auth, method, path, body):
    known_contact(client, auth)
    data = json.dumps({**body, "padding": "x" * MB})
    assert len(data) > MB
    assert_envelope(raw(client, method, path, data, auth), 413, "payload_too_large")
    assert committed(Topic) == 0
    assert committed(Contact) == 1


def test_the_limit_is_exactly_one_megabyte(client, auth):
    prefix, suffix = '{"email": "a@example.com", "source": "', '"}'
    at_limit = prefix + "x" * (MB - len(prefix) - len(suffix)) + suffix
    assert len(at_limit) == MB
    # Exactly 1 MB is read (and refused for the over-long source); one byte more is not read.
    assert_fields_error(raw(client, "POST", CONTACTS, at_limit, auth), "source")
    over = at_limit[:-2] + "x" + suffix
    assert_envelope(raw(client, "POST", CONTACTS, over, auth), 413, "payload_too_large")


def test_a_big_body_is_413_before_it_is_parsed(client, auth):
    response = raw(client, "POST", CONTACTS, b"{" * (MB + 1), auth)
    assert_envelope(response, 413, "payload_too_large")


# --- card numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "attributes": {"note": CARD}},
        {"email": "a@example.com", "attributes": {"note": "4111-1111-1111-1111"}},
        {"email": "a@example.com", "attributes": {"note": "paid with 4111111111111111 12/25"}},
        {"email": "a@example.com", "attributes": {"card": 4111111111111111}},
        {"email": "a@example.com", "attributes": {CARD: "in a key"}},
        {"email": "a@example.com", "source": f"phone order, card {CARD}"},
        {"email": "a@example.com", "topics": [CARD]},
        {"email": "4111111111111111@example.com"},
        {"email": "a@example.com", "attributes": {"amex": "3782 822463 10005"}},
    ],
)
def test_a_card_number_in_a_new_contact_is_refused_and_nothing_stored(client, auth, body):
    error = assert_envelope(client.post(CONTACTS, json=body, headers=auth), 422,
                            "card_number_refused")
    assert len(error["fields"]) == 1  # names where the number was
    assert "1111" not in json.dumps(error) and "10005" not in json.dumps(error)
    assert committed(Contact) == 0
    assert client.get(f"{CONTACTS}/a@example.com", headers=auth).status_code == 404


def test_a_card_number_in_an_update_by_post_changes_nothing(client, auth):
    known_contact(client, auth, attributes={"note": "ok"})
    response = client.post(CONTACTS, json={"email": KNOWN, "attributes": {"note": CARD}},
                           headers=auth)
    assert_envelope(response, 422, "card_number_refused")
    assert client.get(f"{CONTACTS}/{KNOWN}", headers=auth).get_json()["attributes"] == {
        "note": "ok"
    }


@pytest.mark.parametrize(
    "body",
    [
        {"attributes": {"note": CARD}},
        {"attributes": {"card": 4111111111111111, "city": "Berlin"}},
        {"subscriptions": {CARD: "subscribed"}},
    ],
)
def test_a_card_number_in_a_patch_is_refused_and_changes_nothing(client, auth, body):
    known_contact(client, auth, attributes={"note": "ok"})
    response = client.patch(f"{CONTACTS}/{KNOWN}", json=body, headers=auth)
    assert_envelope(response, 422, "card_number_refused")
    assert client.get(f"{CONTACTS}/{KNOWN}", headers=auth).get_json()["attributes"] == {
        "note": "ok"
    }


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "news", "name": f"Card {CARD}"},
        {"slug": "news", "name": "News", "description": f"call us, card {CARD}"},
    ],
)
def test_a_card_number_in_a_topic_is_refused_and_nothing_stored(client, auth, body):
    assert_envelope(client.post(TOPICS, json=body, headers=auth), 422, "card_number_refused")
    assert committed(Topic) == 0


@pytest.mark.parametrize(("method", "template"), EMAIL_PATH_ENDPOINTS, ids=EMAIL_PATH_IDS)
def test_a_card_number_in_the_path_is_refused(client, auth, method, template):
    body = {} if method == "PATCH" else None
    response = client.open(template.format("4111111111111111@example.com"), method=method,
                           json=body, headers=auth)
    assert_envelope(response, 422, "card_number_refused")


def test_ids_the_service_issued_are_not_read_as_card_numbers(client, auth):
    """A message's or campaign's id is 32 hex digits of our making; about one in a hundred
    holds a run of decimal digits that passes the card check, and must still be found."""
    looks_like_a_card = "4111111111111111" + "abcdef0123456789"
    response = client.get(f"/api/v1/messages/{looks_like_a_card}", headers=auth)
    assert_envelope(response, 404, "message_not_found")
    client.post(TOPICS, json={"slug": "news", "name": "News", "double_opt_in": False},
                headers=auth)
    created = client.post("/api/v1/campaigns", headers=auth, json={
        "name": "Winter", "topic": "news", "template": "newsletter",
        "data": {"headline": "Hi", "intro": "Hello"}})
    assert created.status_code == 201
    db.session.execute(update(Campaign).values(public_id=looks_like_a_card))
    db.session.commit()
    scheduled = client.post(f"/api/v1/campaigns/{looks_like_a_card}/schedule", json={},
                            headers=auth)
    assert scheduled.status_code == 200, scheduled.get_json()


def test_a_card_number_in_the_query_string_is_refused(client, auth):
    response = client.get(TOPICS, query_string={"q": CARD}, headers=auth)
    assert_envelope(response, 422, "card_number_refused")


def test_a_card_number_as_the_idempotency_key_is_refused_and_nothing_stored(client, auth):
    """The key is stored with the idempotency record, so it is checked like the body."""
    from mailer.messages.models import IdempotencyRecord, Message

    body = {"to": "buyer@example.com", "template": "receipt", "category": "transactional",
            "data": {"order_number": "A-1", "items": [], "total": "1"}}
    response = client.post("/api/v1/messages", json=body,
                           headers={**auth, "Idempotency-Key": "4111-1111-1111-1111"})
    error = assert_envelope(response, 422, "card_number_refused")
    assert "Idempotency-Key" in error["fields"] and "4111" not in response.get_data(as_text=True)
    assert committed(IdempotencyRecord) == committed(Message) == 0
    fine = client.post("/api/v1/messages", json=body, headers={**auth, "Idempotency-Key": "A-1"})
    assert fine.status_code == 202  # positive control: a key without one is kept


def test_digits_that_fail_the_luhn_check_are_stored(client, auth):
    """Positive control for the refusals above: the guard does not refuse every long number."""
    response = client.post(
        CONTACTS, json={"email": "a@example.com", "attributes": {"order": "4111 1111 1111 1112"}},
        headers=auth,
    )
    assert response.status_code == 201
    assert committed(Contact) == 1


def test_a_card_number_sent_as_a_json_float_is_refused(client, auth):
    data = '{"email": "a@example.com", "attributes": {"card": 4111111111111111.0}}'
    assert_envelope(raw(client, "POST", CONTACTS, data, auth), 422, "card_number_refused")
    assert committed(Contact) == 0


# --- a bug in the service: 500, JSON, no stack trace ----------------------------------------


def test_an_unexpected_error_is_a_json_500_without_details(client, auth, monkeypatch, caplog):
    from mailer.topics import services as topics

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("secret-internal-detail in /srv/mailer/topics.py")

    monkeypatch.setattr(topics, "list_topics", broken)
    response = client.get(TOPICS, headers=auth)
    error = assert_envelope(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    assert "secret-internal-detail" not in text
    assert "RuntimeError" not in text
    assert "File " not in text
    assert error["fields"] == {}
    # The details go to the log instead, for the operator.
    assert "secret-internal-detail" in caplog.text
