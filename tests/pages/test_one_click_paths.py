"""Every case the one-click POST meets, its answer, and what it costs the database.

Every case (a subscribed address leaving the topic, a repeated click, a pending or missing
subscription, an erased contact, a Tell-a-Friend link) goes through the consent services in
the request's session, and must log, count and answer as the table of cases says.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, insert, literal, select, text
from werkzeug.test import Client

from mailer import addresses
from mailer.campaigns import services as campaigns
from mailer.campaigns.models import Campaign
from mailer.consent import services as consent
from mailer.consent.models import ConsentEvent, ConsentSource, Subscription, SubscriptionState
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.extensions import db
from mailer.messages.compose import unsubscribe_token
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.sql_events import listening

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BODY = "List-Unsubscribe=One-Click"
FAN = "fan@example.com"


def one_click(app, link: str):
    """POST as a mail provider does: a fresh client (no cookie), form-encoded, no token.

    The request runs in the test's app context, so in its session: that session's
    transaction is ended first, as a served request starts with none."""
    db.session.commit()
    return Client(app).post(link, data=BODY, headers=FORM)


def link_for(email: str, topic_id: int | None, campaign_id: int | None = None) -> str:
    return f"/unsubscribe/{unsubscribe_token(addresses.hash_of(email), topic_id, campaign_id)}"


def states(email: str = FAN) -> dict[str, str]:
    db.session.expire_all()
    return {s.topic.slug: s.state for s in contacts.get(email).subscriptions}


def events(email: str = FAN) -> list[tuple[str, str, str]]:
    """(subject, state, source) of each consent event of the address, oldest first."""
    db.session.expire_all()
    rows = db.session.scalars(select(ConsentEvent)
                              .where(ConsentEvent.address_hash == addresses.hash_of(email))
                              .order_by(ConsentEvent.id))
    return [(e.subject, e.state, e.source) for e in rows]


def unsubscribed_count(campaign_id: int) -> int:
    db.session.expire_all()
    return db.session.get(Campaign, campaign_id).unsubscribed


@pytest.fixture
def news(make_topic):
    return make_topic("news", double_opt_in=False)


@pytest.fixture
def fan(news):
    contacts.upsert(FAN, topics=["news"], source="test")
    db.session.commit()
    return contacts.get(FAN)


@pytest.fixture
def campaign_id(news) -> int:
    campaign = campaigns.create("Spring", "news", "newsletter",
                                {"headline": "Spring", "intro": "Sale"}, None)
    db.session.commit()
    return campaign.id


def test_a_subscribed_address_leaves_the_topic_logged_as_one_click(app, news, fan):
    response = one_click(app, link_for(FAN, news.id))
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers  # nothing to keep about whoever clicked
    assert "You will receive no more <strong>News</strong>" in response.get_data(as_text=True)
    assert states() == {"news": "unsubscribed"}
    assert events()[-1] == ("topic", "unsubscribed", "one_click")


def test_the_answer_names_the_topic_as_it_is_now(app, news, fan):
    contacts.upsert("second@example.com", topics=["news"], source="test")
    db.session.commit()
    assert "<strong>News</strong>" in one_click(app, link_for(FAN, news.id)).get_data(
        as_text=True)
    news.name = "Weekly News"  # kept answer pages must not outlive the name
    db.session.commit()
    answer = one_click(app, link_for("second@example.com", news.id)).get_data(as_text=True)
    assert "<strong>Weekly News</strong>" in answer


def test_a_repeated_click_answers_alike_and_logs_and_counts_nothing_more(app, news, fan,
                                                                        campaign_id):
    link = link_for(FAN, news.id, campaign_id)
    first = one_click(app, link)
    logged = events()
    second = one_click(app, link)
    assert first.status_code == second.status_code == 200
    assert first.get_data() == second.get_data()
    assert events() == logged
    assert unsubscribed_count(campaign_id) == 1


def test_a_campaign_counts_only_a_subscription_it_ended(app, news, campaign_id, make_topic):
    # Pending (never confirmed): unsubscribed and logged, but the campaign ended nothing.
    make_topic("deals", double_opt_in=True)
    contacts.upsert("pending@example.com", topics=["news", "deals"], source="test")
    contacts.upsert("other@example.com", topics=["deals"], source="test")
    db.session.commit()
    consent.set_state(contacts.get("pending@example.com"), news, SubscriptionState.PENDING,
                      ConsentSource.API)
    db.session.commit()
    assert one_click(app, link_for("pending@example.com", news.id, campaign_id)
                     ).status_code == 200
    assert states("pending@example.com") == {"news": "unsubscribed", "deals": "pending"}
    assert events("pending@example.com")[-1] == ("topic", "unsubscribed", "one_click")
    # No subscription to the topic at all: an unsubscribed row records the wish.
    assert one_click(app, link_for("other@example.com", news.id, campaign_id)
                     ).status_code == 200
    assert states("other@example.com") == {"deals": "pending", "news": "unsubscribed"}
    assert unsubscribed_count(campaign_id) == 0


def test_only_one_of_two_campaigns_links_counts(app, news, fan, campaign_id):
    other = campaigns.create("Summer", "news", "newsletter",
                             {"headline": "Summer", "intro": "Sale"}, None)
    db.session.commit()
    one_click(app, link_for(FAN, news.id, campaign_id))
    one_click(app, link_for(FAN, news.id, other.id))
    assert (unsubscribed_count(campaign_id), unsubscribed_count(other.id)) == (1, 0)


def test_the_page_button_is_logged_as_the_unsubscribe_page(client, news, fan):
    response = client.post(link_for(FAN, news.id), data={"List-Unsubscribe": "One-Click",
                                                         "from_page": "1"})
    assert response.status_code == 200
    assert events()[-1] == ("topic", "unsubscribed", "unsubscribe_page")


def test_all_mail_from_the_page_leaves_every_topic_and_marks_the_address(client, news, fan,
                                                                        make_topic):
    make_topic("deals", double_opt_in=False)
    contacts.upsert(FAN, topics=["deals"], source="test")
    db.session.commit()
    response = client.post(link_for(FAN, news.id), data={
        "List-Unsubscribe": "One-Click", "from_page": "1", "scope": "all"})
    assert "no more newsletters or offers" in response.get_data(as_text=True)
    assert states() == {"news": "unsubscribed", "deals": "unsubscribed"}
    assert Reason.LEFT in suppressions.marks(addresses.hash_of(FAN))


def test_a_tell_a_friend_link_blocks_the_address(app):
    response = one_click(app, link_for("friend@example.com", None))
    assert response.status_code == 200
    assert "We will not mail this address again." in response.get_data(as_text=True)
    assert Reason.BLOCKED in suppressions.marks(addresses.hash_of("friend@example.com"))
    assert one_click(app, link_for("friend@example.com", None)).status_code == 200
    assert events("friend@example.com") == [("address", "blocked", "one_click")]


def test_an_address_without_a_contact_is_suppressed_for_the_topic(app, news):
    response = one_click(app, link_for("gone@example.com", news.id))
    assert response.status_code == 200
    marks = suppressions.suppressions_of(addresses.hash_of("gone@example.com"))
    assert [(m.reason, m.topic_id) for m in marks] == [("unsubscribed", news.id)]


def test_a_get_of_the_link_changes_nothing_and_names_the_topic(client, news, fan):
    logged = events()
    page = client.get(link_for(FAN, news.id))
    assert "Stop receiving <strong>News</strong>" in page.get_data(as_text=True)
    blocking = client.get(link_for(FAN, None))
    assert "Never receive mail" in blocking.get_data(as_text=True)
    assert states() == {"news": "subscribed"}
    assert events() == logged
    assert not suppressions.marks(addresses.hash_of(FAN))


def test_invalid_tokens_get_the_error_page_and_change_nothing(app, news, fan):
    good = link_for(FAN, news.id)
    # Five whole base64 characters of the signature changed (the last one alone can differ
    # only in padding bits, which decoders ignore: "xx" once left a token valid).
    forged = good[:-6] + ("AAAAA" if good[-6:-1] != "AAAAA" else "BBBBB") + good[-1]
    for link in ("/unsubscribe/nonsense", forged):
        response = one_click(app, link)
        assert response.status_code == 400
        assert "This link is not valid" in response.get_data(as_text=True)
    assert states() == {"news": "subscribed"}


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements run meanwhile (the database's own BEGIN and COMMIT excepted)."""
    seen: list[str] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)
        parameters_of[statement] = parameters

    with listening(keep):
        yield seen


parameters_of: dict[str, object] = {}


def test_a_one_click_stays_within_its_statement_budget(app, news, fan, campaign_id):
    link = link_for(FAN, news.id, campaign_id)
    with statements() as seen:
        assert one_click(app, link).status_code == 200
    # The contact with its subscriptions and their topics; the conditional UPDATE, the
    # consent event, the webhook outbox's INSERT ... SELECT (contact.unsubscribed), the
    # campaign's counter.
    assert len(seen) <= 5, seen
    assert unsubscribed_count(campaign_id) == 1
    assert events()[-1] == ("topic", "unsubscribed", "one_click")
    with statements() as seen:  # the repeat: one read
        assert one_click(app, link).status_code == 200
    assert len(seen) <= 1, seen
    assert all(s.lstrip().upper().startswith("SELECT") for s in seen), seen
    assert unsubscribed_count(campaign_id) == 1


def test_the_one_click_finds_the_row_by_contact_not_by_topic(app, news):
    """On a topic with many subscribers, the one-click must reach the one row through the
    contact: through (topic_id, state) it would read the whole topic.
    Checked before the tables have statistics (right after a bulk import, before autovacuum
    analyzes them: PostgreSQL then took the topic's index) and after."""
    now = utcnow()
    emails = [f"reader{i}@example.org" for i in range(2_000)]
    db.session.execute(insert(Contact.__table__), [
        {"email": e, "address_hash": addresses.keyed_hash(e), "attributes": {},
         "partner_sharing": False, "created_at": now, "updated_at": now} for e in emails])
    db.session.execute(insert(Subscription.__table__).from_select(
        ["contact_id", "topic_id", "state", "created_at", "updated_at"],
        select(Contact.id, literal(news.id), literal("subscribed"), Contact.created_at,
               Contact.created_at)))
    db.session.commit()
    link = link_for(emails[-1], news.id)
    with statements() as seen:
        assert one_click(app, link).status_code == 200
    touching = [s for s in seen if "subscriptions" in s]
    assert touching, seen
    postgres = db.engine.dialect.name == "postgresql"
    for analyzed in (False, True):
        if analyzed and postgres:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        for statement in touching:
            rows = db.session.connection().exec_driver_sql(
                explain + statement, parameters_of[statement])  # not run
            shown = "\n".join(str(row[-1]) for row in rows)
            db.session.rollback()
            assert "ix_subscriptions_topic_state" not in shown, (statement, shown)
            assert "SCAN subscriptions" not in shown and "Seq Scan on subscriptions" not in shown
    assert db.session.scalar(select(func.count()).select_from(Subscription)
                             .where(Subscription.state == "unsubscribed")) == 1


def test_two_clicks_at_once_change_log_and_count_once(app, news, fan, campaign_id, monkeypatch):
    """Two one-click POSTs of one link, both having read the subscription as `subscribed`
    before either writes (a mail provider's retry, a double click): the change is a
    conditional UPDATE, so one of them ends it, logs it and counts it, the other finds it
    done. Each runs in a thread of its own, with its own session and connection."""
    import threading

    from tests.api.test_contacts_concurrency import hold_both_at

    hold_both_at(monkeypatch, (consent, "set_state"))
    link = link_for(FAN, news.id, campaign_id)
    db.session.commit()
    answers: list[object] = []

    def click() -> None:
        try:
            answers.append(Client(app).post(link, data=BODY, headers=FORM).status_code)
        except BaseException as exc:  # reported in the test's thread
            answers.append(exc)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [200, 200], answers
    assert states() == {"news": "unsubscribed"}
    assert events().count(("topic", "unsubscribed", "one_click")) == 1
    assert unsubscribed_count(campaign_id) == 1
