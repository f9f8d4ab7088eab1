"""HTTP tests of /api/v1/topics: list and create topics."""

from __future__ import annotations

from typing import Any

import pytest

TOPICS = "/api/v1/topics"


def create(client, auth, **body: Any):
    return client.post(TOPICS, json=body, headers=auth)


def listed(client, auth) -> list[dict[str, Any]]:
    response = client.get(TOPICS, headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    return body["error"]


def test_list_is_empty_without_topics(client, auth):
    assert listed(client, auth) == []


def test_list_holds_every_topic_by_slug(client, auth, make_topic):
    make_topic("zebra", double_opt_in=False, public=False)
    make_topic("alpha", double_opt_in=True, public=True)
    topics = listed(client, auth)
    assert [t["slug"] for t in topics] == ["alpha", "zebra"]
    alpha, zebra = topics
    assert alpha["double_opt_in"] is True and alpha["public"] is True
    assert zebra["double_opt_in"] is False and zebra["public"] is False
    assert alpha["name"] == "Alpha"


def test_create_returns_201_with_the_topic(client, auth):
    response = create(client, auth, slug="weekly-news", name="Weekly news",
                      description="Every Friday", double_opt_in=False, public=True)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["slug"] == "weekly-news"
    assert body["name"] == "Weekly news"
    assert body["description"] == "Every Friday"
    assert body["double_opt_in"] is False
    assert body["public"] is True
    assert body["created_at"]
    [topic] = listed(client, auth)
    assert {k: topic[k] for k in ("slug", "name", "double_opt_in", "public")} == {
        "slug": "weekly-news", "name": "Weekly news", "double_opt_in": False, "public": True,
    }


def test_create_defaults(client, auth):
    response = create(client, auth, slug="news", name="News")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["double_opt_in"] is True
    assert body["public"] is False
    assert body["description"] == ""


def test_a_new_topic_with_default_opt_in_needs_confirmation(client, auth):
    assert create(client, auth, slug="news", name="News").status_code == 201
    response = client.post("/api/v1/contacts", json={"email": "a@example.com", "topics": ["news"]},
                           headers=auth)
    assert response.get_json()["subscriptions"] == {"news": "pending"}


def test_a_new_single_opt_in_topic_subscribes_at_once(client, auth):
    assert create(client, auth, slug="deals", name="Deals", double_opt_in=False).status_code == 201
    response = client.post("/api/v1/contacts",
                           json={"email": "a@example.com", "topics": ["deals"]}, headers=auth)
    assert response.get_json()["subscriptions"] == {"deals": "subscribed"}


def test_a_taken_slug_is_409_topic_exists(client, auth):
    assert create(client, auth, slug="news", name="News").status_code == 201
    response = create(client, auth, slug="news", name="Other news", double_opt_in=False)
    error = error_of(response, 409)
    assert error["code"] == "topic_exists"
    assert "slug" in error["fields"]
    [topic] = listed(client, auth)
    assert topic["name"] == "News"
    assert topic["double_opt_in"] is True


@pytest.mark.parametrize(
    "slug",
    ["", "News", "with space", "-news", "news-", "news_letter", "news/x", "n" * 65, "ümlaut",
     "news\n"],
)
def test_a_bad_slug_is_422_naming_slug_once(client, auth, slug):
    error = error_of(create(client, auth, slug=slug, name="News"), 422)
    assert error["code"] == "validation_error"
    # One problem, one message (not one per validator that noticed it).
    assert error["fields"]["slug"] == ["Lower-case letters, digits and dashes, 1-64."]
    assert listed(client, auth) == []


@pytest.mark.parametrize("slug", ["n", "n" * 64, "news-2024", "a-b-c", "0"])
def test_good_slugs_are_accepted(client, auth, slug):
    assert create(client, auth, slug=slug, name="N").status_code == 201
    assert [t["slug"] for t in listed(client, auth)] == [slug]


@pytest.mark.parametrize("missing", ["slug", "name"])
def test_slug_and_name_are_required(client, auth, missing):
    body = {"slug": "news", "name": "News"}
    del body[missing]
    error = error_of(create(client, auth, **body), 422)
    assert missing in error["fields"]
    assert listed(client, auth) == []
