"""HTTP tests of /api/v1/contacts: create, read, change, erase and export contacts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, text

from mailer import addresses
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.api.test_messages import RECEIPT
from tests.pages.helpers import last_confirm_path, press_confirm

CONTACTS = "/api/v1/contacts"


def url(email: str, suffix: str = "") -> str:
    return f"{CONTACTS}/{quote(email, safe='@')}{suffix}"


def post(client, auth, **body: Any):
    return client.post(CONTACTS, json=body, headers=auth)


def created(client, auth, **body: Any) -> dict[str, Any]:
    response = post(client, auth, **body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def get(client, auth, email: str) -> dict[str, Any]:
    response = client.get(url(email), headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def patch(client, auth, email: str, **body: Any):
    return client.patch(url(email), json=body, headers=auth)


def export(client, auth, email: str) -> dict[str, Any]:
    response = client.get(url(email, "/export"), headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    return body["error"]


def events(client, auth, email: str, subject: str | None = None) -> list[dict[str, Any]]:
    history = export(client, auth, email)["consent_history"]
    return [e for e in history if subject is None or e["subject"] == subject]


# --- POST /api/v1/contacts ------------------------------------------------------------------


def test_post_creates_a_contact_with_201(client, auth):
    body = created(client, auth, email="ann@example.com")
    assert body["email"] == "ann@example.com"
    assert body["subscriptions"] == {}
    assert body["attributes"] == {}
    assert get(client, auth, "ann@example.com")["email"] == "ann@example.com"


def test_post_of_a_known_address_updates_with_200(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    created(client, auth, email="ann@example.com", attributes={"country": "DE"})
    response = post(client, auth, email="ann@example.com", topics=["news"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["subscriptions"] == {"news": "subscribed"}
    assert body["attributes"] == {"country": "DE"}


def test_post_to_a_double_opt_in_topic_leaves_the_subscription_pending(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    body = created(client, auth, email="ann@example.com", topics=["news"])
    assert body["subscriptions"] == {"news": "pending"}
    assert get(client, auth, "ann@example.com")["subscriptions"] == {"news": "pending"}


def test_post_to_a_single_opt_in_topic_subscribes(client, auth, make_topic):
    make_topic("deals", double_opt_in=False)
    body = created(client, auth, email="ann@example.com", topics=["deals"])
    assert body["subscriptions"] == {"deals": "subscribed"}


def test_post_with_both_kinds_of_topic_sets_each_by_its_own_setting(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    body = created(client, auth, email="ann@example.com", topics=["news", "deals"])
    assert body["subscriptions"] == {"news": "pending", "deals": "subscribed"}


def test_asking_again_never_downgrades_a_subscription(client, auth, make_topic):
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com", topics=["deals"])
    response = post(client, auth, email="ann@example.com", topics=["deals"])
    assert response.status_code == 200
    assert response.get_json()["subscriptions"] == {"deals": "subscribed"}
    assert len(events(client, auth, "ann@example.com", "topic")) == 1


def test_the_same_topic_twice_in_one_request_is_one_subscription(client, auth, make_topic):
    make_topic("news")
    body = created(client, auth, email="ann@example.com", topics=["news", "news"])
    assert body["subscriptions"] == {"news": "pending"}
    assert len(events(client, auth, "ann@example.com", "topic")) == 1


def test_partner_sharing_is_false_by_default(client, auth):
    body = created(client, auth, email="ann@example.com")
    assert body["partner_sharing"] is False
    assert events(client, auth, "ann@example.com", "partner_sharing") == []


def test_partner_sharing_false_records_nothing(client, auth):
    body = created(client, auth, email="ann@example.com", partner_sharing=False)
    assert body["partner_sharing"] is False
    assert events(client, auth, "ann@example.com", "partner_sharing") == []


def grant_sharing(client, email: str = "ann@example.com") -> None:
    """The owner grants partner sharing on the page of the link mailed to the address."""
    assert press_confirm(client, last_confirm_path(email), share=True).status_code == 200


def test_partner_sharing_true_only_asks_the_address(client, auth):
    body = created(client, auth, email="ann@example.com", partner_sharing=True, source="checkout")
    assert body["partner_sharing"] is False
    assert events(client, auth, "ann@example.com", "partner_sharing") == []
    grant_sharing(client)
    assert get(client, auth, "ann@example.com")["partner_sharing"] is True
    [event] = events(client, auth, "ann@example.com", "partner_sharing")
    assert event["state"] == "granted"
    assert event["source"] == "confirm"


def test_post_without_partner_sharing_leaves_a_grant_in_place(client, auth):
    created(client, auth, email="ann@example.com", partner_sharing=True)
    grant_sharing(client)
    response = post(client, auth, email="ann@example.com")
    assert response.status_code == 200
    assert response.get_json()["partner_sharing"] is True


def test_post_attributes_merge_into_the_existing_ones(client, auth):
    created(client, auth, email="ann@example.com",
            attributes={"country": "DE", "plan": "free", "visits": 3})
    response = post(client, auth, email="ann@example.com",
                    attributes={"plan": "pro", "vip": True, "visits": None})
    assert response.status_code == 200
    expected = {"country": "DE", "plan": "pro", "vip": True}
    assert response.get_json()["attributes"] == expected
    assert get(client, auth, "ann@example.com")["attributes"] == expected


def test_post_keeps_the_first_source(client, auth):
    created(client, auth, email="ann@example.com", source="checkout")
    response = post(client, auth, email="ann@example.com", source="footer")
    assert response.get_json()["source"] == "checkout"


def test_post_with_an_unknown_topic_is_422_naming_topics_and_stores_nothing(
    client, auth, make_topic
):
    make_topic("news")
    response = post(client, auth, email="ann@example.com", topics=["news", "nope"])
    error = error_of(response, 422)
    assert "topics" in error["fields"]
    assert "nope" in " ".join(error["fields"]["topics"])
    assert client.get(url("ann@example.com"), headers=auth).status_code == 404


# --- GET /api/v1/contacts/<email> -----------------------------------------------------------


def test_get_returns_the_contact(client, auth, make_topic):
    make_topic("news")
    created(client, auth, email="ann@example.com", topics=["news"], source="checkout",
            attributes={"country": "DE"})
    body = get(client, auth, "ann@example.com")
    assert body["email"] == "ann@example.com"
    assert body["subscriptions"] == {"news": "pending"}
    assert body["attributes"] == {"country": "DE"}
    assert body["source"] == "checkout"
    assert body["partner_sharing"] is False
    assert body["created_at"] and body["updated_at"]


def test_get_of_an_unknown_address_is_404(client, auth):
    error = error_of(client.get(url("nobody@example.com"), headers=auth), 404)
    assert error["code"] == "contact_not_found"


# --- PATCH /api/v1/contacts/<email> ---------------------------------------------------------


def test_patch_merges_attributes_and_null_removes_one(client, auth):
    created(client, auth, email="ann@example.com", attributes={"country": "DE", "plan": "free"})
    response = patch(client, auth, "ann@example.com",
                     attributes={"plan": None, "city": "Berlin", "age": 41})
    assert response.status_code == 200, response.get_json()
    expected = {"country": "DE", "city": "Berlin", "age": 41}
    assert response.get_json()["attributes"] == expected
    assert get(client, auth, "ann@example.com")["attributes"] == expected


def test_patch_removing_an_absent_attribute_is_harmless(client, auth):
    created(client, auth, email="ann@example.com", attributes={"country": "DE"})
    response = patch(client, auth, "ann@example.com", attributes={"missing": None})
    assert response.status_code == 200
    assert response.get_json()["attributes"] == {"country": "DE"}


def test_patch_with_an_empty_body_changes_nothing(client, auth, make_topic):
    make_topic("news")
    before = created(client, auth, email="ann@example.com", topics=["news"],
                     attributes={"country": "DE"})
    response = patch(client, auth, "ann@example.com")
    assert response.status_code == 200
    after = response.get_json()
    for key in ("email", "attributes", "subscriptions", "partner_sharing", "source"):
        assert after[key] == before[key]


def test_patch_subscribes_to_a_single_opt_in_topic(client, auth, make_topic):
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com")
    response = patch(client, auth, "ann@example.com", subscriptions={"deals": "subscribed"})
    assert response.status_code == 200
    assert response.get_json()["subscriptions"] == {"deals": "subscribed"}


def test_patch_subscribing_to_a_double_opt_in_topic_stays_pending(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    created(client, auth, email="ann@example.com")
    response = patch(client, auth, "ann@example.com", subscriptions={"news": "subscribed"})
    assert response.status_code == 200
    assert response.get_json()["subscriptions"] == {"news": "pending"}


def test_patch_unsubscribes(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com", topics=["news", "deals"])
    response = patch(client, auth, "ann@example.com", subscriptions={"news": "unsubscribed"})
    assert response.status_code == 200
    assert response.get_json()["subscriptions"] == {"news": "unsubscribed", "deals": "subscribed"}
    assert get(client, auth, "ann@example.com")["subscriptions"]["news"] == "unsubscribed"
    [last] = events(client, auth, "ann@example.com", "topic")[-1:]
    assert (last["topic"], last["state"], last["source"]) == ("news", "unsubscribed", "api")


def test_patch_unsubscribing_a_pending_subscription(client, auth, make_topic):
    make_topic("news")
    created(client, auth, email="ann@example.com", topics=["news"])
    response = patch(client, auth, "ann@example.com", subscriptions={"news": "unsubscribed"})
    assert response.get_json()["subscriptions"] == {"news": "unsubscribed"}


def test_patch_subscribe_and_unsubscribe_in_one_request(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com", topics=["news"])
    response = patch(client, auth, "ann@example.com",
                     subscriptions={"news": "unsubscribed", "deals": "subscribed"})
    assert response.get_json()["subscriptions"] == {"news": "unsubscribed", "deals": "subscribed"}


def test_patch_withdraws_partner_sharing(client, auth):
    created(client, auth, email="ann@example.com", partner_sharing=True)
    grant_sharing(client)
    response = patch(client, auth, "ann@example.com", partner_sharing=False)
    assert response.status_code == 200
    assert response.get_json()["partner_sharing"] is False
    assert get(client, auth, "ann@example.com")["partner_sharing"] is False
    states = [e["state"] for e in events(client, auth, "ann@example.com", "partner_sharing")]
    assert states == ["granted", "withdrawn"]


def test_patch_asks_for_partner_sharing(client, auth):
    created(client, auth, email="ann@example.com")
    response = patch(client, auth, "ann@example.com", partner_sharing=True)
    assert response.get_json()["partner_sharing"] is False
    assert events(client, auth, "ann@example.com", "partner_sharing") == []
    grant_sharing(client)
    states = [e["state"] for e in events(client, auth, "ann@example.com", "partner_sharing")]
    assert states == ["granted"]


def test_patch_with_an_unknown_topic_is_422_and_changes_nothing(client, auth, make_topic):
    make_topic("news", double_opt_in=False)
    created(client, auth, email="ann@example.com", attributes={"country": "DE"})
    response = patch(client, auth, "ann@example.com", attributes={"country": "FR"},
                     subscriptions={"news": "subscribed", "nope": "subscribed"})
    error = error_of(response, 422)
    assert "subscriptions" in error["fields"]
    body = get(client, auth, "ann@example.com")
    assert body["attributes"] == {"country": "DE"}
    assert body["subscriptions"] == {}


def test_patch_of_an_unknown_address_is_404(client, auth):
    response = patch(client, auth, "nobody@example.com", attributes={"a": "b"})
    assert error_of(response, 404)["code"] == "contact_not_found"
    assert client.get(url("nobody@example.com"), headers=auth).status_code == 404


# --- DELETE /api/v1/contacts/<email> --------------------------------------------------------


def test_delete_erases_the_contact(client, auth, make_topic):
    make_topic("news")
    created(client, auth, email="ann@example.com", topics=["news"])
    response = client.delete(url("ann@example.com"), headers=auth)
    assert response.status_code == 204
    assert response.get_data() == b""
    # No body, so nothing to label: no JSON content type (nor any other).
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers or response.content_length == 0
    assert error_of(client.get(url("ann@example.com"), headers=auth), 404)["code"] == (
        "contact_not_found"
    )
    # What remains is the hash's `erased` mark and the one event saying so: no contact part.
    held = export(client, auth, "ann@example.com")
    assert set(held) == {"email", "consent_history", "suppressions", "messages"}
    assert [mark["reason"] for mark in held["suppressions"]] == ["erased"]
    assert [e["state"] for e in held["consent_history"]] == ["erased"]


def test_delete_twice_answers_204_and_keeps_one_record_of_the_erasure(client, auth):
    """The second erasure finds the address held by hash (its `erased` mark): DELETE is
    idempotent, and the consent log still says the address was erased."""
    created(client, auth, email="ann@example.com")
    assert client.delete(url("ann@example.com"), headers=auth).status_code == 204
    again = client.delete(url("ann@example.com"), headers=auth)
    assert again.status_code == 204
    assert again.get_data() == b""
    held = export(client, auth, "ann@example.com")
    assert [mark["reason"] for mark in held["suppressions"]] == ["erased"]
    assert [e["state"] for e in held["consent_history"]] == ["erased"]


def test_delete_of_an_unknown_address_is_404(client, auth):
    error_of(client.delete(url("nobody@example.com"), headers=auth), 404)


def test_an_erased_address_stays_suppressed_when_added_again(client, auth, make_topic):
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com", topics=["deals"])
    assert client.delete(url("ann@example.com"), headers=auth).status_code == 204

    again = created(client, auth, email="Ann@Example.com", topics=["deals"])
    assert again["subscriptions"] == {"deals": "pending"}
    held = export(client, auth, "ann@example.com")
    assert "erased" in [mark["reason"] for mark in held["suppressions"]]


def test_an_erased_address_stays_pending_through_patch_too(client, auth, make_topic):
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com")
    assert client.delete(url("ann@example.com"), headers=auth).status_code == 204
    created(client, auth, email="ann@example.com")
    response = patch(client, auth, "ann@example.com", subscriptions={"deals": "subscribed"})
    assert response.get_json()["subscriptions"] == {"deals": "pending"}


def test_delete_leaves_no_plaintext_of_the_contact_in_any_table(client, auth, make_topic):
    make_topic("news")
    address = "zq8.erasure@example.org"
    created(client, auth, email=address, topics=["news"], source="popup-zq8src",
            partner_sharing=True, attributes={"nickname": "zq8nick"})
    patch(client, auth, address, attributes={"city": "zq8city"})

    def dump() -> str:
        db.session.remove()
        with db.engine.connect() as connection:
            return "\n".join(
                repr(tuple(row))
                for table in db.metadata.sorted_tables
                for row in connection.execute(select(table))
            )

    before = dump()
    for secret in (address, "zq8nick", "zq8city", "zq8src"):
        assert secret in before  # positive control: the dump sees stored text
    assert client.delete(url(address), headers=auth).status_code == 204
    after = dump()
    for secret in (address, "zq8.erasure", "zq8nick", "zq8city", "zq8src"):
        assert secret not in after


# --- GET /api/v1/contacts/<email>/export ----------------------------------------------------


def test_export_holds_the_contact_and_its_consent_history(client, auth, make_topic):
    make_topic("news", double_opt_in=True)
    make_topic("deals", double_opt_in=False)
    created(client, auth, email="ann@example.com", topics=["news", "deals"], source="checkout",
            partner_sharing=True, attributes={"country": "DE"})
    grant_sharing(client)  # the link also confirms `news`
    patch(client, auth, "ann@example.com", subscriptions={"deals": "unsubscribed"})

    held = export(client, auth, "ann@example.com")
    assert held["email"] == "ann@example.com"
    assert held["attributes"] == {"country": "DE"}
    assert held["source"] == "checkout"
    assert held["partner_sharing"] is True
    assert held["created_at"] and held["updated_at"]
    assert {slug: s["state"] for slug, s in held["subscriptions"].items()} == {
        "news": "subscribed", "deals": "unsubscribed",
    }
    assert held["suppressions"] == []

    history = [(e["subject"], e["topic"], e["state"], e["source"], e["note"])
               for e in held["consent_history"]]
    assert ("topic", "news", "pending", "api", "checkout") in history
    assert ("topic", "deals", "subscribed", "api", "checkout") in history
    assert ("partner_sharing", None, "granted", "confirm", None) in history
    assert history[-1] == ("topic", "deals", "unsubscribed", "api", None)
    assert all(e["at"] for e in held["consent_history"])


@pytest.mark.parametrize("double_opt_in", [False, True],
                         ids=["written-whole", "with-a-confirmation-mail"])
def test_a_new_contact_is_recorded_alike_on_both_ways_of_writing_it(
        client, auth, make_topic, double_opt_in):
    """A new address needing no confirmation is written in one go (one statement on
    PostgreSQL), one that needs it through the consent services: the same rows either way."""
    make_topic("news", double_opt_in=double_opt_in)
    make_topic("deals", double_opt_in=double_opt_in)
    state = "pending" if double_opt_in else "subscribed"
    answer = created(client, auth, email="Ann@Example.com", topics=["deals", "news", "deals"],
                     source="checkout", partner_sharing=True,
                     attributes={"country": "DE", "plan": None})
    assert answer["email"] == "ann@example.com"
    assert answer["subscriptions"] == {"deals": state, "news": state}
    assert answer["attributes"] == {"country": "DE"}
    assert answer["partner_sharing"] is False and answer["source"] == "checkout"
    assert answer["created_at"] == answer["updated_at"]
    assert get(client, auth, "ann@example.com") == answer

    held = export(client, auth, "ann@example.com")
    history = [(e["subject"], e["topic"], e["state"], e["source"], e["note"])
               for e in held["consent_history"]]
    # In the order asked; partner sharing waits for the address (CONSENT.md).
    assert history == [("topic", "deals", state, "api", "checkout"),
                       ("topic", "news", state, "api", "checkout")]
    assert {slug: s["state"] for slug, s in held["subscriptions"].items()} == {
        "deals": state, "news": state}
    mails = db.session.scalars(select(Message.template)).all()
    assert mails == ["confirm_subscription"]  # topics pending or not, sharing is asked
    # And it is a contact like any other: asking again changes nothing.
    again = post(client, auth, email="ann@example.com", topics=["news"])
    assert again.status_code == 200
    assert again.get_json()["subscriptions"] == {"deals": state, "news": state}


def test_export_of_an_unknown_address_is_404(client, auth):
    error_of(client.get(url("nobody@example.com", "/export"), headers=auth), 404)


# --- addresses held only by keyed hash (a Tell-a-Friend recipient) ---------------------------

FRIEND = "onlyref55@example.org"


def refer_friend(client, auth, friend: str = FRIEND) -> None:
    """Tell-a-Friend: quarantines the friend by hash and queues one mail; no contact."""
    response = client.post("/api/v1/referrals", headers=auth, json={
        "sender_email": "buyer55@example.com", "recipient_email": friend,
        "data": {"item_name": "Guitar", "item_url": "http://127.0.0.1:5000/items/guitar"}})
    assert response.status_code == 202, response.get_data(as_text=True)
    response.close()  # the referral is queued once the answer has gone out
    assert client.get(url(friend), headers=auth).status_code == 404  # not a contact


def test_export_of_an_address_held_only_as_marks(client, auth):
    refer_friend(client, auth)
    held = export(client, auth, "OnlyRef55@Example.org")
    assert set(held) == {"email", "consent_history", "suppressions", "messages"}
    assert held["email"] == FRIEND
    assert [mark["reason"] for mark in held["suppressions"]] == ["quarantined"]
    assert [(e["subject"], e["state"], e["source"]) for e in held["consent_history"]] == [
        ("address", "quarantined", "referral")
    ]
    assert [(m["category"], m["template"], m["status"]) for m in held["messages"]] == [
        ("referral", "referral", "queued")
    ]
    # Nothing of the sender is held under the friend's hash, nor the other way round.
    error_of(client.get(url("buyer55@example.com", "/export"), headers=auth), 404)


def test_delete_of_an_address_held_only_as_marks_erases_it(client, auth):
    refer_friend(client, auth)
    response = client.delete(url(FRIEND), headers=auth)
    assert response.status_code == 204
    assert response.get_data() == b""

    db.session.rollback()
    assert suppressions.marks(addresses.hash_of(FRIEND)) == {Reason.QUARANTINED, Reason.ERASED}
    # The queued referral mail held the plaintext address: scrubbed and cancelled.
    message = db.session.scalars(select(Message)).one()
    assert (message.to_address, message.data, message.status) == (None, {}, "cancelled")
    held = export(client, auth, FRIEND)
    assert [e["state"] for e in held["consent_history"]] == ["erased"]
    assert [m["status"] for m in held["messages"]] == ["cancelled"]
    assert FRIEND not in repr(db.session.execute(text("SELECT * FROM consent_events")).all())


def test_a_transactional_recipient_held_only_in_the_outbox_can_be_exported_and_erased(
    client, auth,
):
    response = client.post("/api/v1/messages", headers=auth, json={
        "to": "receipt55@example.org", "template": "receipt", "data": RECEIPT,
        "category": "transactional"})
    assert response.status_code == 202, response.get_data(as_text=True)
    held = export(client, auth, "receipt55@example.org")
    assert held["suppressions"] == [] and held["consent_history"] == []
    assert [m["category"] for m in held["messages"]] == ["transactional"]

    assert client.delete(url("receipt55@example.org"), headers=auth).status_code == 204
    db.session.rollback()
    dump = repr(db.session.execute(text("SELECT * FROM messages")).all())
    assert "receipt55" not in dump


# --- address normalization ------------------------------------------------------------------


def test_every_spelling_of_an_address_is_one_contact(client, auth):
    body = created(client, auth, email="Ann.Lee@EXAMPLE.COM")
    assert body["email"] == "ann.lee@example.com"
    for spelling in ("ann.lee@example.com", "ANN.LEE@example.com", " Ann.Lee@Example.Com "):
        response = post(client, auth, email=spelling)
        assert response.status_code == 200, spelling
        assert response.get_json()["email"] == "ann.lee@example.com"
    for spelling in ("ann.lee@example.com", "ANN.LEE@EXAMPLE.COM", "Ann.Lee@example.com"):
        assert get(client, auth, spelling)["email"] == "ann.lee@example.com"


def test_plus_tags_and_dots_make_different_addresses(client, auth):
    created(client, auth, email="ann@example.com")
    for other in ("ann+news@example.com", "a.nn@example.com"):
        body = created(client, auth, email=other)
        assert body["email"] == other
    assert client.delete(url("ann+news@example.com"), headers=auth).status_code == 204
    assert get(client, auth, "ann@example.com")["email"] == "ann@example.com"


def test_patch_and_delete_find_the_contact_in_any_spelling(client, auth):
    created(client, auth, email="ann@example.com")
    response = patch(client, auth, "ANN@Example.COM", attributes={"x": "y"})
    assert response.status_code == 200
    assert get(client, auth, "ann@example.com")["attributes"] == {"x": "y"}
    assert client.delete(url("Ann@EXAMPLE.com"), headers=auth).status_code == 204
    assert client.get(url("ann@example.com"), headers=auth).status_code == 404


def test_an_idn_domain_is_one_contact_in_unicode_and_punycode(client, auth):
    body = created(client, auth, email="kai@bücher.example")
    assert body["email"] == "kai@xn--bcher-kva.example"
    response = post(client, auth, email="KAI@XN--BCHER-KVA.EXAMPLE")
    assert response.status_code == 200
    for spelling in ("kai@bücher.example", "Kai@BÜCHER.example", "kai@xn--bcher-kva.example"):
        assert get(client, auth, spelling)["email"] == "kai@xn--bcher-kva.example"


def test_an_internationalized_local_part_is_one_contact_in_any_case(client, auth):
    body = created(client, auth, email="jörg@example.com")
    response = post(client, auth, email="JÖRG@EXAMPLE.COM")
    assert response.status_code == 200
    assert response.get_json()["email"] == body["email"]
    assert get(client, auth, "Jörg@example.com")["email"] == body["email"]
