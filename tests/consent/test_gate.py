"""The consent gate, row by row as ../shared/CONSENT.md writes it, then against the database."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer import addresses
from mailer.consent import gate
from mailer.consent.gate import Category, Mark, Stage, decide
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.database import utcnow
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

T = 7  # the topic of a promotional mail
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
OK = "✓"


def mark(reason: Reason, *, days_ago: float = 1, topic_id: int | None = None) -> Mark:
    return Mark(reason, topic_id, NOW - dt.timedelta(days=days_ago))


def row(marks=(), subscription=None):
    """The four decisions of one row of the table: transactional, promotional, confirmation,
    referral."""
    results = []
    for category in (Category.TRANSACTIONAL, Category.PROMOTIONAL, Category.CONFIRMATION,
                     Category.REFERRAL):
        decision = decide(category, marks, topic_id=T, subscription=subscription, now=NOW)
        results.append(OK if decision.allowed else decision.reason)
    return results


# | the address is | transactional | promotional for topic T | confirmation | referral |
@pytest.mark.parametrize(
    ("address", "marks", "subscription", "expected"),
    [
        ("unknown", (), None, [OK, "not_subscribed", OK, OK]),
        ("pending for T", (), "pending", [OK, "not_subscribed", OK, OK]),
        ("unsubscribed for T", (), "unsubscribed", [OK, "unsubscribed", OK, OK]),
        ("subscribed to T", (), "subscribed", [OK, OK, OK, OK]),
        ("bounced", (mark(Reason.BOUNCED),), "subscribed",
         ["bounced", "bounced", "bounced", "bounced"]),
        ("complained", (mark(Reason.COMPLAINED),), "subscribed",
         [OK, "complained", OK, "complained"]),
        ("left", (mark(Reason.LEFT),), "subscribed", [OK, "unsubscribed", OK, "left"]),
        ("erased", (mark(Reason.ERASED),), None, [OK, "erased", OK, "erased"]),
        ("blocked", (mark(Reason.BLOCKED),), "subscribed", [OK, "blocked", OK, "blocked"]),
        ("quarantined, referral 1 day ago", (mark(Reason.QUARANTINED, days_ago=1),), None,
         [OK, "not_subscribed", OK, "quarantined"]),
        ("quarantined, referral 31 days ago", (mark(Reason.QUARANTINED, days_ago=31),), None,
         [OK, "not_subscribed", OK, OK]),
        ("subscribed, but unsubscribed from T by link after erasure",
         (mark(Reason.UNSUBSCRIBED, topic_id=T),), "subscribed", [OK, "unsubscribed", OK, OK]),
    ],
)
def test_the_rule_table(address, marks, subscription, expected):
    assert row(marks, subscription) == expected, address


def test_a_mark_on_another_topic_does_not_refuse_this_one():
    marks = (mark(Reason.UNSUBSCRIBED, topic_id=T + 1),)
    assert decide(Category.PROMOTIONAL, marks, topic_id=T, subscription="subscribed").allowed


def test_promotional_mail_without_a_topic_is_refused():
    assert decide(Category.PROMOTIONAL, (), topic_id=None).reason == "no_topic"


def test_at_most_three_confirmations_a_day():
    assert decide(Category.CONFIRMATION, (), confirmations_today=2).allowed
    assert decide(Category.CONFIRMATION, (), confirmations_today=3).reason == "confirmation_limit"


def test_check_many_reads_marks_and_subscriptions_from_the_database(make_topic):
    news = make_topic("news", double_opt_in=False)
    subscribed = contacts.upsert("sub@example.com", topics=["news"]).contact
    contacts.upsert("pending@example.com")
    bounced_hash = addresses.hash_of("bounced@example.com")
    suppressions.suppress(bounced_hash, Reason.BOUNCED, source=ConsentSource.BOUNCE)
    requests = [
        gate.Request(subscribed.address_hash, Category.PROMOTIONAL, news.id),
        gate.Request(addresses.hash_of("pending@example.com"), Category.PROMOTIONAL, news.id),
        gate.Request(bounced_hash, Category.TRANSACTIONAL),
        gate.Request(addresses.hash_of("stranger@example.com"), Category.TRANSACTIONAL),
    ]
    decisions = gate.check_many(requests, stage=Stage.DELIVERY)
    assert [(d.allowed, d.reason) for d in decisions] == [
        (True, None), (False, "not_subscribed"), (False, "bounced"), (True, None)
    ]
    # Withdrawing consent is seen by the very next check.
    contacts.update(subscribed, subscriptions={"news": "unsubscribed"})
    assert gate.check(subscribed.address_hash, Category.PROMOTIONAL, news.id,
                      stage=Stage.DELIVERY).reason == "unsubscribed"


def test_quarantine_age_comes_from_the_mark(make_topic):
    address_hash = addresses.hash_of("friend@example.com")
    suppressions.suppress(address_hash, Reason.QUARANTINED, source=ConsentSource.REFERRAL)
    assert gate.check(address_hash, Category.REFERRAL).reason == "quarantined"
    assert utcnow() - suppressions.suppressions_of(address_hash)[0].created_at < dt.timedelta(
        minutes=1
    )


def test_the_daily_confirmation_cap_counts_the_outbox_of_the_last_day():
    from sqlalchemy import insert

    from mailer.extensions import db
    from mailer.messages.models import Message

    address_hash = addresses.hash_of("ann@example.com")
    other_hash = addresses.hash_of("bob@example.com")
    now = utcnow()

    def confirmation(status: str, *, hours_ago: float = 0, to: str = address_hash) -> None:
        at = now - dt.timedelta(hours=hours_ago)
        db.session.execute(insert(Message.__table__).values(
            public_id=f"{len(made):032x}", category="confirmation", template="confirm",
            data={}, to_address=None, address_hash=to, status=status, attempts=0,
            created_at=at, updated_at=at))
        made.append(status)

    made: list[str] = []
    confirmation("sent", hours_ago=1)
    confirmation("queued")
    # Not counted: withheld or cancelled mail, mail older than a day, another address's.
    confirmation("suppressed")
    confirmation("cancelled")
    confirmation("sent", hours_ago=25)
    confirmation("sent", to=other_hash)
    db.session.flush()
    requests = [gate.Request(address_hash, Category.CONFIRMATION),
                gate.Request(other_hash, Category.CONFIRMATION)]
    assert [d.allowed for d in gate.check_many(requests, stage=Stage.ACCEPT)] == [True, True]
    confirmation("deferred")
    db.session.flush()
    assert gate.check(address_hash, Category.CONFIRMATION).reason == "confirmation_limit"
    # The cap is a limit of accepting: a confirmation already accepted is delivered.
    assert gate.check(address_hash, Category.CONFIRMATION, stage=Stage.DELIVERY).allowed
