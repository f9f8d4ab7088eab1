"""/api/v1/campaigns: creation, validation and the state machine."""

from __future__ import annotations

import pytest

from tests.conftest import key_with

CAMPAIGNS = "/api/v1/campaigns"
NEWS = {"headline": "Winter sale", "intro": "Pianos half price."}


@pytest.fixture
def news(make_topic):
    return make_topic("news", double_opt_in=False)


def create(client, auth, **overrides):
    body = {"name": "Winter sale", "topic": "news", "template": "newsletter", "data": NEWS}
    body.update(overrides)
    return client.post(CAMPAIGNS, json=body, headers=auth)


def test_create_gives_a_draft_with_zero_counts(client, auth, news):
    response = create(client, auth, segment={"attributes": {"country": "DE"}})
    assert response.status_code == 201, response.get_json()
    campaign = response.get_json()
    assert campaign["status"] == "draft" and campaign["send_at"] is None
    assert campaign["stats"]["recipients"] == 0 and campaign["stats"]["sent"] == 0
    listed = client.get(CAMPAIGNS, headers=auth).get_json()
    assert [c["id"] for c in listed] == [campaign["id"]]
    assert client.get(f"{CAMPAIGNS}/{campaign['id']}", headers=auth).get_json() == campaign


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"topic": "nope"}, "validation_error", "topic"),
        ({"template": "nope"}, "template_error", "template"),
        ({"data": {"headline": "only"}}, "template_error", "data"),
        ({"segment": {"country": "DE"}}, "validation_error", "segment"),
        ({"segment": {"attributes": {"country": ["DE"]}}}, "validation_error", "segment"),
        ({"name": ""}, "validation_error", "name"),
        ({"colour": "red"}, "validation_error", "colour"),
    ],
)
def test_bad_campaigns_are_refused(client, auth, news, overrides, code, field):
    response = create(client, auth, **overrides)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == code and field in error["fields"], error
    assert client.get(CAMPAIGNS, headers=auth).get_json() == []


def test_the_state_machine_and_invalid_transitions(client, auth, news):
    campaign_id = create(client, auth).get_json()["id"]
    url = f"{CAMPAIGNS}/{campaign_id}"
    for action in ("pause", "resume"):
        refused = client.post(f"{url}/{action}", headers=auth)
        assert refused.status_code == 409
        assert refused.get_json()["error"]["code"] == "invalid_transition"
    scheduled = client.post(f"{url}/schedule", json={"send_at": "2030-01-15T09:00:00+01:00"},
                            headers=auth).get_json()
    assert scheduled["status"] == "scheduled"
    assert scheduled["send_at"].startswith("2030-01-15T08:00:00")
    cancelled = client.post(f"{url}/cancel", headers=auth).get_json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"{url}/schedule", json={}, headers=auth).status_code == 409
    assert client.post(f"{url}/cancel", headers=auth).status_code == 409


@pytest.mark.parametrize("send_at", ["2030-01-15T09:00:00", "tomorrow", 5])
def test_send_at_needs_a_time_zone(client, auth, news, send_at):
    campaign_id = create(client, auth).get_json()["id"]
    response = client.post(f"{CAMPAIGNS}/{campaign_id}/schedule", json={"send_at": send_at},
                           headers=auth)
    assert response.status_code == 422
    assert "send_at" in response.get_json()["error"]["fields"]


def test_unknown_campaign_and_scopes(client, auth, news):
    assert client.get(f"{CAMPAIGNS}/nope", headers=auth).status_code == 404
    reader = key_with("campaigns:read")
    assert create(client, reader).status_code == 403
    assert client.get(CAMPAIGNS, headers=reader).status_code == 200
