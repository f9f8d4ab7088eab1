"""Per-API-key limits on contact creation and on the confirmation mails a key causes
(MAILER_API_CONTACT_LIMIT, MAILER_API_CONFIRMATION_LIMIT): off by default, 429 and nothing
changed when used up, counted per key; the per-address cap stays as it is."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from mailer.apikeys.limits import _EXTENSION
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.models import Message
from tests.conftest import key_with


@pytest.fixture
def limited(app):
    """Set limits for the test; the counts start from nothing and are forgotten after it."""
    def set_limits(contacts: str | None = None, confirmations: str | None = None) -> None:
        app.config["MAILER_API_CONTACT_LIMIT"] = contacts
        app.config["MAILER_API_CONFIRMATION_LIMIT"] = confirmations
        app.extensions.pop(_EXTENSION, None)

    yield set_limits
    set_limits()


@pytest.fixture
def topics(make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)


def create(client, headers, email: str, topics=("news",)):
    return client.post("/api/v1/contacts", json={"email": email, "topics": list(topics)},
                       headers=headers)


def count(model, *where) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def confirmations() -> int:
    return count(Message, Message.category == "confirmation", Message.status != "suppressed")


def test_off_by_default(client, topics):
    writer = key_with("contacts:write")
    for n in range(30):
        assert create(client, writer, f"r{n}@example.com").status_code == 201
    assert confirmations() == 30


def test_contact_creation_is_limited_per_key_and_nothing_changes_over_it(client, topics,
                                                                         limited):
    limited(contacts="3 per hour")
    writer, other = key_with("contacts:write"), key_with("contacts:write")
    for n in range(3):
        assert create(client, writer, f"r{n}@example.com", ["deals"]).status_code == 201
    over = create(client, writer, "r3@example.com", ["deals"])
    assert over.status_code == 429
    assert over.get_json()["error"]["code"] == "rate_limited"
    assert int(over.headers["Retry-After"]) > 0
    assert count(Contact) == 3
    # Another key has a count of its own.
    assert create(client, other, "r3@example.com", ["deals"]).status_code == 201


def test_confirmation_mails_caused_by_a_key_are_limited(client, auth, topics, limited):
    limited(confirmations="2 per hour")
    writer = key_with("contacts:write")
    assert create(client, writer, "a@example.com").status_code == 201
    assert create(client, writer, "b@example.com").status_code == 201
    over = create(client, writer, "c@example.com")
    assert over.status_code == 429 and "confirmation" in over.get_json()["error"]["message"]
    assert client.get("/api/v1/contacts/c@example.com", headers=auth).status_code == 404
    assert confirmations() == 2
    # A request that mails nothing (a single opt-in topic) still goes through ...
    assert create(client, writer, "d@example.com", ["deals"]).status_code == 201
    # ... and so does a PATCH that mails nothing; one that would mail is refused whole.
    patch = client.patch("/api/v1/contacts/d@example.com", headers=writer,
                         json={"subscriptions": {"news": "subscribed"},
                               "attributes": {"plan": "gold"}})
    assert patch.status_code == 429
    contact = client.get("/api/v1/contacts/d@example.com", headers=auth).get_json()
    assert contact["subscriptions"] == {"deals": "subscribed"} and contact["attributes"] == {}
    assert confirmations() == 2


def test_the_per_address_cap_stays_under_a_generous_key_limit(client, topics, limited):
    limited(contacts="100 per hour", confirmations="100 per hour")
    writer = key_with("contacts:write")
    for topic in ("news", "news", "news", "news", "news"):
        assert create(client, writer, "same@example.com", [topic]).status_code in (200, 201)
    assert confirmations() == 3  # CONSENT.md: at most 3 a day to one address


def test_settings_are_checked_at_start():
    from config import ConfigError, TestConfig

    config = TestConfig.from_env({"MAILER_API_CONTACT_LIMIT": "1000 per hour",
                                  "MAILER_API_CONFIRMATION_LIMIT": "100/hour;500/day"})
    assert config.MAILER_API_CONTACT_LIMIT == "1000 per hour"
    assert TestConfig.from_env({}).MAILER_API_CONFIRMATION_LIMIT is None
    with pytest.raises(ConfigError, match="MAILER_API_CONTACT_LIMIT"):
        TestConfig.from_env({"MAILER_API_CONTACT_LIMIT": "lots"})


def test_the_429_is_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "429" in paths["/api/v1/contacts"]["post"]["responses"]
    assert "429" in paths["/api/v1/contacts/{email}"]["patch"]["responses"]
