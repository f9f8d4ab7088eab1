"""Console contacts: found by exact address only; state, marks and history without ever
telling that a referral reached an address; added with a source through the API's service;
imported from a CSV with progress and per-line errors; exported as the API does; erased after
a confirmation step. Every consent change made here names the console user."""

from __future__ import annotations

import io
import json
import logging

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.consent.models import ConsentEvent, ConsentSource, Subscription
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.admin.sections import MARKETER, fresh, hidden, marketer_console, post, text


@pytest.fixture
def console(client):
    return marketer_console(client)


def find(console, email: str):
    return post(console, "/admin/contacts", {"email": email}, form_page="/admin/contacts")


def test_there_is_no_list_of_addresses_only_a_lookup(console, make_topic):
    make_topic("news", double_opt_in=False)
    contacts.upsert("ann@example.com", topics=["news"])
    db.session.commit()
    page = text(console.get("/admin/contacts"))
    assert "ann@example.com" not in page
    assert "no list of every address" in page
    found = find(console, "Ann@Example.com")  # any spelling of the whole address
    assert found.status_code == 200 and "ann@example.com" in text(found)
    assert 'data-state="subscribed"' in text(found)
    partial = find(console, "ann@")  # never a search by part of an address
    assert partial.status_code == 422 and "ann@example.com" not in text(partial)


def test_a_lookup_shows_state_marks_and_history_with_sources(console, make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("deals", double_opt_in=False)
    contacts.upsert("ann@example.com", topics=["news", "deals"], source="checkout")
    contacts.update(contacts.get("ann@example.com"), subscriptions={"deals": "unsubscribed"})
    suppressions.suppress(addresses.hash_of("ann@example.com"), Reason.COMPLAINED,
                          source=ConsentSource.COMPLAINT)
    db.session.commit()
    page = text(find(console, "ann@example.com"))
    assert page.count('data-state="subscribed"') == 1
    assert page.count('data-state="unsubscribed"') == 1
    assert "complained" in page
    assert "api — checkout" in page  # the source of the first consent, with its note
    assert "complaint" in page


def test_a_referral_recipient_is_shown_as_not_subscribed_and_never_as_quarantined(
        console, make_topic):
    make_topic("news", double_opt_in=True)
    contacts.upsert("friend@example.com", topics=["news"])  # pending
    suppressions.suppress(addresses.hash_of("friend@example.com"), Reason.QUARANTINED,
                          source=ConsentSource.REFERRAL)
    suppressions.suppress(addresses.hash_of("stranger@example.com"), Reason.QUARANTINED,
                          source=ConsentSource.REFERRAL)
    db.session.commit()
    for email in ("friend@example.com", "stranger@example.com"):
        page = text(find(console, email)).lower()
        assert "quarantin" not in page and "referral" not in page, email
    assert "No contact has this address." in text(find(console, "stranger@example.com"))
    suppressions_page = post(console, "/admin/suppressions", {"email": "stranger@example.com"},
                             form_page="/admin/suppressions")
    assert "quarantin" not in text(suppressions_page).lower()


def test_adding_a_contact_uses_the_apis_rules_and_names_the_console_user(console, make_topic,
                                                                          caplog):
    make_topic("news", double_opt_in=False)
    make_topic("club", double_opt_in=True)
    caplog.set_level(logging.INFO)
    response = post(console, "/admin/contacts/new", {
        "email": "Bob@Example.com", "topics": ["news", "club"], "source": "shop counter"},
        form_page="/admin/contacts/new")
    assert response.status_code == 200
    page = text(response)
    assert "A confirmation mail is on its way" in page
    fresh()
    states = dict(db.session.execute(
        select(Subscription.topic_id, Subscription.state)).all())
    assert sorted(states.values()) == ["pending", "subscribed"]  # double opt-in holds
    assert db.session.scalar(select(Message.category)) == "confirmation"
    notes = set(db.session.scalars(select(ConsentEvent.note)))
    assert notes == {f"shop counter (console user {MARKETER})"}
    assert set(db.session.scalars(select(ConsentEvent.source))) == {"admin"}
    assert "bob@example.com" not in caplog.text  # logs carry ids only


def test_a_marked_address_gets_a_confirmation_mail_never_a_silent_subscription(console,
                                                                                make_topic):
    make_topic("news", double_opt_in=False)
    suppressions.suppress(addresses.hash_of("left@example.com"), Reason.LEFT,
                          source=ConsentSource.PREFERENCES)
    db.session.commit()
    post(console, "/admin/contacts/new", {"email": "left@example.com", "topics": ["news"],
                                          "source": "phone call"},
         form_page="/admin/contacts/new")
    fresh()
    assert db.session.scalar(select(Subscription.state)) == "pending"
    assert db.session.scalar(select(Message.category)) == "confirmation"
    assert Reason.LEFT in suppressions.marks(addresses.hash_of("left@example.com"))


def test_adding_needs_a_source_and_a_topic(console, make_topic):
    make_topic("news", double_opt_in=False)
    response = post(console, "/admin/contacts/new", {"email": "bob@example.com"},
                    form_page="/admin/contacts/new")
    assert response.status_code == 422
    assert "Say where the address gave consent." in text(response)
    assert "Choose a topic." in text(response)
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 0


CSV = (b"email,country\n"
       b"ann@example.com,DE\n"
       b"not an address,FR\n"
       b"bob@example.com,AT\n"
       b"cy@example.com,DE,extra\n"
       + b"".join(b"fan%d@example.com,NL\n" % i for i in range(250)))


def test_a_csv_import_streams_its_progress_and_lists_the_bad_lines(console, make_topic):
    make_topic("news", double_opt_in=True)
    response = post(console, "/admin/contacts/import", {
        "file": (io.BytesIO(CSV), "list.csv"), "topic": "news", "source": "spring fair",
        "confirm": "y"}, form_page="/admin/contacts/import", buffered=False)
    assert response.status_code == 200
    chunks = [chunk.decode() for chunk in response.response]  # the page as it streams
    page = "".join(chunks)
    assert "of 254 rows" in page  # progress lines with the file's total
    assert page.index('class="import-step"') < page.index('id="import-report"')
    assert len(chunks) > 2  # written as it went, not at the end
    assert '<dd data-count="created">252</dd>' in page
    assert '<td class="num">3</td>' in page and '<td class="num">5</td>' in page  # bad lines
    fresh()
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 252
    # Imported consent is the operator's: subscribed at once, the console user named.
    assert set(db.session.scalars(select(Subscription.state))) == {"subscribed"}
    assert set(db.session.scalars(select(ConsentEvent.note))) == {
        f"spring fair (console user {MARKETER})"}

    again = post(console, "/admin/contacts/import", {
        "file": (io.BytesIO(CSV), "list.csv"), "topic": "news", "source": "spring fair",
        "confirm": "y"}, form_page="/admin/contacts/import")
    assert '<dd data-count="created">0</dd>' in text(again)  # a second run changes nothing
    fresh()
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 252


def test_an_import_without_an_email_column_says_so(console, make_topic):
    make_topic("news")
    response = post(console, "/admin/contacts/import", {
        "file": (io.BytesIO(b"name\nAnn\n"), "list.csv"), "topic": "news", "source": "x",
        "confirm": "y"}, form_page="/admin/contacts/import")
    assert "no &#39;email&#39; column" in text(response)


def test_export_is_the_apis_export(console, client, make_topic, auth):
    make_topic("news", double_opt_in=False)
    contacts.upsert("ann@example.com", topics=["news"], attributes={"country": "DE"})
    db.session.commit()
    page = text(find(console, "ann@example.com"))
    response = post(console, "/admin/contacts/export",
                    {"email": hidden(page, "email")}, form_page="/admin/contacts")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    api = client.get("/api/v1/contacts/ann@example.com/export", headers=auth).get_json()
    assert json.loads(response.get_data()) == api


def test_erasure_asks_first_then_erases_and_names_the_console_user(console, make_topic):
    make_topic("news", double_opt_in=False)
    contacts.upsert("ann@example.com", topics=["news"])
    db.session.commit()
    page = text(find(console, "ann@example.com"))
    confirm = post(console, "/admin/contacts/erase", {"email": hidden(page, "email")},
                   form_page="/admin/contacts")
    assert confirm.status_code == 200 and "Erase for good" in text(confirm)
    fresh()
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 1  # not yet
    done = post(console, "/admin/contacts/erase/confirmed",
                {"email": hidden(text(confirm), "email")}, form_page="/admin/contacts")
    assert done.status_code == 302
    fresh()
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 0
    event = db.session.scalar(select(ConsentEvent))
    assert (event.state, event.source, event.note) == ("erased", "admin",
                                                        f"console user {MARKETER}")
    assert Reason.ERASED in suppressions.marks(addresses.hash_of("ann@example.com"))
