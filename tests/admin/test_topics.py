"""Console topics: create, edit, retire; a retired topic takes no new subscription by any
path, and keeps its subscribers and their history."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from mailer.consent.models import ConsentEvent, Subscription
from mailer.contacts import services as contacts
from mailer.errors import ValidationFailed
from mailer.extensions import db
from mailer.topics.models import Topic
from tests.admin.sections import fresh, marketer_console, post, text


@pytest.fixture
def console(client):
    return marketer_console(client)


def topic(slug: str) -> Topic:
    fresh()
    return db.session.scalar(select(Topic).where(Topic.slug == slug))


def test_a_marketer_creates_a_topic_with_every_setting(console):
    response = post(console, "/admin/topics/new", {
        "slug": "news", "name": "News", "description": "Monthly", "double_opt_in": "y",
        "public": "y", "welcome_text": "Thanks for joining!"}, form_page="/admin/topics/new")
    assert response.status_code == 302
    made = topic("news")
    assert (made.name, made.description, made.double_opt_in, made.public, made.welcome_text) == (
        "News", "Monthly", True, True, "Thanks for joining!")
    assert "News" in text(console.get("/admin/topics"))


def test_a_taken_or_bad_slug_is_shown_on_the_form(console, make_topic):
    make_topic("news")
    taken = post(console, "/admin/topics/new", {"slug": "news", "name": "Again"},
                 form_page="/admin/topics/new")
    assert taken.status_code == 422 and "This slug is taken." in text(taken)
    bad = post(console, "/admin/topics/new", {"slug": "Not A Slug", "name": "x"},
               form_page="/admin/topics/new")
    assert bad.status_code == 422 and "Lower-case letters" in text(bad)
    assert db.session.scalar(select(func.count()).select_from(Topic)) == 1


def test_editing_changes_what_the_topic_says_and_its_opt_in(console, make_topic):
    make_topic("news", double_opt_in=True, public=True)
    response = post(console, "/admin/topics/news", {
        "name": "Newsletter", "description": "", "welcome_text": "Welcome aboard"},
        form_page="/admin/topics/news")  # the unticked boxes are not sent, as a browser does
    assert response.status_code == 302
    edited = topic("news")
    assert (edited.name, edited.double_opt_in, edited.public, edited.welcome_text) == (
        "Newsletter", False, False, "Welcome aboard")


def test_the_confirmation_page_shows_the_welcome_text(client, make_topic):
    from mailer.consent import confirmation

    made = make_topic("news", double_opt_in=True)
    made.welcome_text = "Your first issue arrives on Monday."
    result = contacts.upsert("ann@example.com", topics=["news"])
    db.session.commit()
    token = confirmation.make_token(result.contact, [made])
    page = client.get(f"/confirm/{token}")
    if 'method="post"' in text(page):  # confirmation by POST (a later round): press the button
        from tests.pages.helpers import csrf_token
        page = client.post(f"/confirm/{token}",
                           data={"csrf_token": csrf_token(client, f"/confirm/{token}")})
    assert "Your first issue arrives on Monday." in text(page)


def test_retiring_asks_first_then_closes_every_way_in_and_keeps_the_history(
        console, client, make_topic, auth):
    make_topic("news", double_opt_in=False, public=True)
    contacts.upsert("old@example.com", topics=["news"])
    db.session.commit()
    events_before = db.session.scalar(select(func.count()).select_from(ConsentEvent))

    confirm = console.get("/admin/topics/news/retire")
    assert confirm.status_code == 200 and "Retire the topic News?" in text(confirm)
    assert topic("news").retired_at is None  # the GET changed nothing
    assert post(console, "/admin/topics/news/retire",
                form_page="/admin/topics/news/retire").status_code == 302
    retired = topic("news")
    assert retired.retired_at is not None and not retired.public

    # History kept: the subscriber stays subscribed, no event was removed.
    assert db.session.scalar(select(Subscription.state)) == "subscribed"
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == events_before

    # No new subscriptions: the API (new and known addresses), the PATCH, the console's
    # add form and import, and the signup page (which no longer offers it).
    for email in ("new@example.com", "old@example.com"):
        answer = client.post("/api/v1/contacts", json={"email": email, "topics": ["news"]},
                             headers=auth)
        assert answer.status_code == 422, email
        assert answer.get_json()["error"]["code"] == "topic_retired"
    db.session.rollback()
    contacts.upsert("other@example.com")
    db.session.commit()
    patch = client.patch("/api/v1/contacts/other@example.com",
                         json={"subscriptions": {"news": "subscribed"}}, headers=auth)
    assert patch.status_code == 422
    with pytest.raises(ValidationFailed):
        contacts.upsert("third@example.com", topics=["news"])
    db.session.rollback()
    assert "news" not in text(console.get("/admin/contacts/new"))
    imported = post(console, "/admin/contacts/import", {
        "file": (io.BytesIO(b"email\nimp@example.com\n"), "list.csv"), "topic": "news",
        "source": "fair", "confirm": "y"}, form_page="/admin/contacts/import")
    assert imported.status_code == 422  # not a choice any more
    assert "News" not in text(client.get("/subscribe"))
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 1

    # Leaving still works.
    patch = client.patch("/api/v1/contacts/old@example.com",
                         json={"subscriptions": {"news": "unsubscribed"}}, headers=auth)
    assert patch.status_code == 200


@pytest.mark.parametrize("double_opt_in", [False, True])
def test_a_retired_topic_stops_even_the_one_statement_write_of_a_new_address(make_topic,
                                                                            double_opt_in):
    """With nothing of the session's pending, a new address is written whole on a connection
    of its own, committed at once (contacts.upsert): that write must not happen either."""
    from mailer.contacts.models import Contact
    from mailer.database import utcnow

    made = make_topic("news", double_opt_in=double_opt_in)
    made.retired_at = utcnow()
    db.session.commit()
    with pytest.raises(ValidationFailed) as refused:
        contacts.upsert("new@example.com", topics=["news"])
    assert refused.value.code == "topic_retired"
    db.session.rollback()
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 0
    assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
