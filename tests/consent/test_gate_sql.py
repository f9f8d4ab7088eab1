"""The gate's SQL conditions agree with decide() on every row of ../shared/CONSENT.md's table:
a contact (or a bare address) is built for each row in the database, and for each the
condition, run by the database, says what decide() says."""

from __future__ import annotations

import pytest
from sqlalchemy import literal, select

from mailer import addresses
from mailer.consent import gate
from mailer.consent.gate import Mark, Stage
from mailer.consent.models import ConsentSource
from mailer.consent.services import RequestKind
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.models import Category
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

# | the address is | how it is built: (contact's state for T or None for no contact, marks)
ROWS = {
    "unknown (no contact)": (None, ()),
    "a contact pending for T": ("pending", ()),
    "a contact unsubscribed for T": ("unsubscribed", ()),
    "a contact with no subscription to T": ("none", ()),
    "subscribed to T": ("subscribed", ()),
    "bounced": ("subscribed", (Reason.BOUNCED,)),
    "complained": ("subscribed", (Reason.COMPLAINED,)),
    "left": ("subscribed", (Reason.LEFT,)),
    "erased": (None, (Reason.ERASED,)),
    "blocked": ("subscribed", (Reason.BLOCKED,)),
    "quarantined": ("subscribed", (Reason.QUARANTINED,)),
    "quarantined, no contact": (None, (Reason.QUARANTINED,)),
    "subscribed, unsubscribed from T by link (a topic mark)": ("subscribed", ("topic",)),
    "subscribed, a mark on another topic": ("subscribed", ("other topic",)),
}


def build(number: int, state: str | None, marks, topic, other_topic) -> str:
    """The address of a row, built in the database through the services; returns its keyed
    hash. The marks come after the subscription (a marked address cannot be subscribed)."""
    email = f"row{number}@example.com"
    if state == "pending":
        contacts.upsert(email, topics=[topic.slug], kind=RequestKind.UNVERIFIED)
    elif state == "none":
        contacts.upsert(email)
    elif state is not None:
        contact = contacts.upsert(email, topics=[topic.slug], kind=RequestKind.IMPORTED).contact
        if state == "unsubscribed":
            contacts.update(contact, subscriptions={topic.slug: "unsubscribed"})
    address_hash = addresses.hash_of(email)
    for mark in marks:
        if mark == "topic":
            suppressions.suppress(address_hash, Reason.UNSUBSCRIBED, topic_id=topic.id,
                                  source=ConsentSource.ONE_CLICK)
        elif mark == "other topic":
            suppressions.suppress(address_hash, Reason.UNSUBSCRIBED, topic_id=other_topic.id,
                                  source=ConsentSource.ONE_CLICK)
        else:
            suppressions.suppress(address_hash, mark, source=ConsentSource.OPERATOR)
    db.session.flush()
    return address_hash


@pytest.fixture
def table(make_topic):
    topic = make_topic("news", double_opt_in=False)
    other_topic = make_topic("deals", double_opt_in=False)
    built = {name: build(number, state, marks, topic, other_topic)
             for number, (name, (state, marks)) in enumerate(ROWS.items())}
    db.session.commit()
    return topic, built


def test_promotional_allowed_agrees_with_decide_on_every_row(table):
    topic, built = table
    seen = {}
    for name, address_hash in built.items():
        by_sql = db.session.scalar(select(gate.promotional_allowed(literal(address_hash),
                                                                   topic.id)))
        decision = gate.check(address_hash, Category.PROMOTIONAL, topic.id, stage=Stage.DELIVERY)
        assert bool(by_sql) is decision.allowed, (name, decision)
        seen[name] = decision.allowed
    # Not a comparison of two things that always say no: the table allows exactly these.
    assert [name for name, allowed in seen.items() if allowed] == [
        "subscribed to T", "subscribed, a mark on another topic"]


def test_needs_own_confirmation_is_true_exactly_for_an_address_wide_mark(table):
    _topic, built = table
    for name, address_hash in built.items():
        by_sql = db.session.scalar(select(gate.needs_own_confirmation(literal(address_hash))))
        marks = [Mark(Reason(row.reason), row.topic_id, row.created_at)
                 for row in suppressions.suppressions_of(address_hash)]
        assert bool(by_sql) is gate.has_mark_needing_own_confirmation(marks), name
        assert bool(by_sql) is any(isinstance(m, Reason) for m in ROWS[name][1]), name


def test_a_promotional_mail_without_a_topic_is_refused_in_sql_too(table):
    _topic, built = table
    assert db.session.scalar(select(gate.promotional_allowed(
        literal(built["subscribed to T"]), None))) is False


def test_notice_allowed_agrees_with_decide_on_every_row(table):
    _topic, built = table
    seen = {}
    for name, address_hash in built.items():
        by_sql = db.session.scalar(select(gate.notice_allowed(literal(address_hash))))
        decision = gate.check(address_hash, Category.NOTICE, stage=Stage.DELIVERY)
        assert bool(by_sql) is decision.allowed, (name, decision)
        seen[name] = decision.allowed
    # The notice column: a contact subscribed to any topic and without an address-wide mark.
    # "pending or unsubscribed for T" is allowed only when subscribed elsewhere: these rows
    # are subscribed to nothing, so the table refuses them.
    assert [name for name, allowed in seen.items() if allowed] == [
        "subscribed to T", "subscribed, unsubscribed from T by link (a topic mark)",
        "subscribed, a mark on another topic"]


def test_a_contact_pending_for_one_topic_and_subscribed_to_another_may_get_a_notice(make_topic):
    news = make_topic("news", double_opt_in=True)
    deals = make_topic("deals", double_opt_in=False)
    contacts.upsert("both@example.com", topics=[news.slug], kind=RequestKind.UNVERIFIED)
    address_hash = addresses.hash_of("both@example.com")
    db.session.flush()
    assert not gate.check(address_hash, Category.NOTICE).allowed
    assert not db.session.scalar(select(gate.notice_allowed(literal(address_hash))))
    contacts.upsert("both@example.com", topics=[deals.slug], kind=RequestKind.IMPORTED)
    db.session.flush()
    assert gate.check(address_hash, Category.NOTICE).allowed
    assert db.session.scalar(select(gate.notice_allowed(literal(address_hash))))
