"""A new address gets the states the consent rules give, whether the caller has written in its
transaction already or not. Runs on SQLite and on PostgreSQL (MAILER_TEST_DATABASE_URL)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from mailer import addresses
from mailer.consent.models import ConsentEvent, ConsentSource, Subscription, SubscriptionState
from mailer.consent.services import RequestKind, requested_state
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.topics.models import Topic

CASES = list(itertools.product(RequestKind, (False, True), (False, True), (False, True)))


@pytest.mark.parametrize(
    ("kind", "marked", "double_opt_in", "in_transaction"), CASES,
    ids=[f"{kind.value}-{'marked' if marked else 'unmarked'}-"
         f"{'double' if double else 'single'}-{'in-transaction' if held else 'alone'}"
         for kind, marked, double, held in CASES])
def test_a_new_address_gets_the_state_the_rules_give(make_topic, kind, marked, double_opt_in,
                                                     in_transaction):
    make_topic("deals", double_opt_in=False)  # every request asks for this one too
    make_topic("news", double_opt_in=double_opt_in)
    if marked:
        suppressions.suppress(addresses.hash_of("ann@example.com"), Reason.BOUNCED,
                              source=ConsentSource.BOUNCE)
    if in_transaction:
        contacts.upsert("someone-else@example.com")  # the caller has written already
    else:
        db.session.commit()
    assert db.session().in_transaction() is in_transaction
    expected = {  # in the order asked
        "news": requested_state(None, double_opt_in=double_opt_in, marked=marked, kind=kind),
        "deals": requested_state(None, double_opt_in=False, marked=marked, kind=kind),
    }

    result = contacts.upsert("Ann@Example.com", topics=["news", "deals"], kind=kind,
                             source="checkout", partner_sharing=True)
    db.session.commit()

    assert result.created
    assert {s.topic.slug: s.state for s in result.contact.subscriptions} == expected
    assert result.outcome.states == expected
    assert [t.slug for t in result.outcome.needs_confirmation] == [
        slug for slug, state in expected.items() if state is SubscriptionState.PENDING]
    # What the database holds, read afresh.
    db.session.expunge_all()
    contact = db.session.scalar(select(Contact).where(Contact.email == "ann@example.com"))
    assert contact.partner_sharing is True and contact.source == "checkout"
    held = {s.topic.slug: s.state for s in db.session.scalars(
        select(Subscription).where(Subscription.contact_id == contact.id))}
    assert held == expected
    slugs = {topic.id: topic.slug for topic in db.session.scalars(select(Topic))}
    logged = [(e.subject, slugs.get(e.topic_id), e.state, e.source, e.note)
              for e in db.session.scalars(select(ConsentEvent).where(
                  ConsentEvent.contact_id == contact.id).order_by(ConsentEvent.id))]
    assert logged == [("partner_sharing", None, "granted", "api", "checkout"),
                      ("topic", "news", expected["news"], "api", "checkout"),
                      ("topic", "deals", expected["deals"], "api", "checkout")]
