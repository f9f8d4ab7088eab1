"""GET /api/v1/openapi.json: the OpenAPI 3 document of the whole API, served without a key."""

from __future__ import annotations

import re
from typing import Any

import pytest

OPENAPI = "/api/v1/openapi.json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# The API as it exists now; the test against the app's routes below keeps it complete later.
EXPECTED_OPERATIONS = {
    ("/api/v1/contacts", "post"),
    ("/api/v1/contacts/{email}", "get"),
    ("/api/v1/contacts/{email}", "patch"),
    ("/api/v1/contacts/{email}", "delete"),
    ("/api/v1/contacts/{email}/export", "get"),
    ("/api/v1/topics", "get"),
    ("/api/v1/topics", "post"),
    ("/api/v1/notices", "post"),
    ("/api/v1/notices/{notice_id}", "get"),
}
BODY_OPERATIONS = {
    ("/api/v1/contacts", "post"),
    ("/api/v1/contacts/{email}", "patch"),
    ("/api/v1/topics", "post"),
    ("/api/v1/notices", "post"),
}


def document(client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.get(OPENAPI, headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ("#/components/...")."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def routed_operations(app) -> set[tuple[str, str]]:
    """What the app actually serves under /api/v1, in OpenAPI path syntax."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule == OPENAPI:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found.update((path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


def test_the_document_is_served_without_a_key(client):
    doc = document(client)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    assert doc["info"]["version"]


def test_a_wrong_key_does_not_hide_the_document(client):
    assert document(client, {"Authorization": "Bearer mk_wrong"})["openapi"].startswith("3.")


def test_every_operation_of_the_api_is_documented(client):
    documented = set(operations(document(client)))
    assert EXPECTED_OPERATIONS - documented == set()


def test_the_document_matches_the_routes_the_app_serves(client, app):
    documented = set(operations(document(client)))
    served = routed_operations(app)
    assert served, "no /api/v1 route found: the comparison would prove nothing"
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_documented_paths_answer(client, auth):
    """Each documented path exists: a call with an example address is never a 404/405."""
    for path, method in operations(document(client)):
        url = path.replace("{email}", "nobody@example.com")
        response = client.open(url, method=method.upper(), json={}, headers=auth)
        assert response.status_code != 405, (path, method)
        if "{" not in path:
            assert response.status_code != 404, (path, method)


def test_operations_behind_a_key_declare_bearer_auth(client):
    doc = document(client)
    schemes = doc["components"]["securitySchemes"]
    names = [name for name, s in schemes.items()
             if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"]
    assert names, schemes
    for key, operation in operations(doc).items():
        security = operation.get("security", doc.get("security"))
        assert security, key
        assert any(name in requirement for requirement in security for name in names), key


def test_every_operation_documents_the_error_envelope(client):
    doc = document(client)
    for key, operation in operations(doc).items():
        errors = [
            resolve(doc, response)
            for status, response in operation["responses"].items()
            if status == "default" or status.startswith(("4", "5"))
        ]
        assert errors, key
        for response in errors:
            schema = resolve(doc, response["content"]["application/json"]["schema"])
            assert "error" in schema["properties"], key


def test_body_operations_document_a_json_body(client):
    doc = document(client)
    for key in BODY_OPERATIONS:
        body = operations(doc)[key]["requestBody"]
        schema = resolve(doc, body["content"]["application/json"]["schema"])
        assert schema["properties"], key
        # Unknown fields are refused (422), and the document says so.
        assert schema.get("additionalProperties") is False, key


def test_the_documented_request_schemas_match_the_contract(client):
    doc = document(client)
    ops = operations(doc)

    def body_schema(key):
        return resolve(doc, ops[key]["requestBody"]["content"]["application/json"]["schema"])

    contact = body_schema(("/api/v1/contacts", "post"))
    assert {"email", "topics", "source", "partner_sharing", "attributes"} <= set(
        contact["properties"]
    )
    assert contact["required"] == ["email"]
    topic = body_schema(("/api/v1/topics", "post"))
    assert {"slug", "name", "description", "double_opt_in", "public"} <= set(topic["properties"])
    assert set(topic["required"]) == {"slug", "name"}
    assert topic["properties"]["double_opt_in"]["default"] is True
    patch = body_schema(("/api/v1/contacts/{email}", "patch"))
    assert {"attributes", "partner_sharing", "subscriptions"} <= set(patch["properties"])


def test_path_parameters_are_declared(client):
    doc = document(client)
    for path, item in doc["paths"].items():
        for name in re.findall(r"{([^}]+)}", path):
            for method, operation in item.items():
                if method not in HTTP_METHODS:
                    continue
                parameters = item.get("parameters", []) + operation.get("parameters", [])
                declared = {resolve(doc, p)["name"] for p in parameters
                            if resolve(doc, p)["in"] == "path"}
                assert name in declared, (path, method)


def test_the_document_is_a_valid_openapi_3_document(client):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document(client))


def error_answers(doc: dict[str, Any], operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The documented 4xx answers of an operation, each resolved."""
    return {status: resolve(doc, response) for status, response in operation["responses"].items()
            if status.startswith("4")}


def test_every_operation_lists_its_4xx_answers_with_the_error_envelope(client):
    doc = document(client)
    for key, operation in operations(doc).items():
        answers = error_answers(doc, operation)
        # Behind a key (all of them): no key, a key without the scope, a card number in the
        # path or query.
        assert {"401", "403", "422"} <= set(answers), key
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            assert {"400", "413", "415", "422"} <= set(answers), key
        if "{" in key[0]:
            assert "404" in answers, key
        for status, answer in answers.items():
            schema = resolve(doc, answer["content"]["application/json"]["schema"])
            assert "error" in schema["properties"], (key, status)
            # Each says which `code` the caller will find in the envelope.
            assert "`" in answer["description"], (key, status)


@pytest.mark.parametrize(("path", "method", "code"), [
    ("/api/v1/topics", "post", "topic_exists"),
    ("/api/v1/messages", "post", "idempotency_key_reused"),
    ("/api/v1/messages/batch", "post", "idempotency_key_reused"),
    ("/api/v1/campaigns/{campaign_id}/schedule", "post", "invalid_transition"),
    ("/api/v1/campaigns/{campaign_id}/pause", "post", "invalid_transition"),
    ("/api/v1/campaigns/{campaign_id}/resume", "post", "invalid_transition"),
    ("/api/v1/campaigns/{campaign_id}/cancel", "post", "invalid_transition"),
])
def test_the_conflicts_are_documented_as_409(client, path, method, code):
    doc = document(client)
    answer = error_answers(doc, operations(doc)[(path, method)])["409"]
    assert code in answer["description"]


def test_the_documented_codes_are_the_ones_answered(client, auth):
    """A positive control of the descriptions: a taken slug really answers 409 topic_exists,
    a text/plain body 415 unsupported_media_type, as the document says."""
    doc = document(client)
    topics = operations(doc)[("/api/v1/topics", "post")]
    body = {"slug": "news", "name": "News"}
    assert client.post("/api/v1/topics", json=body, headers=auth).status_code == 201
    taken = client.post("/api/v1/topics", json=body, headers=auth)
    assert str(taken.status_code) in topics["responses"]
    assert taken.get_json()["error"]["code"] in topics["responses"]["409"]["description"]
    plain = client.post("/api/v1/topics", data="{}", content_type="text/plain", headers=auth)
    assert plain.get_json()["error"]["code"] in topics["responses"]["415"]["description"]
