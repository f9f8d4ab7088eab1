"""Double opt-in: the confirm token turns pending into subscribed and lifts marks."""

from __future__ import annotations

import time

import pytest

from mailer import addresses, tokens
from mailer.consent import confirmation
from mailer.consent.models import ConsentSource
from mailer.consent.services import history
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason


def test_confirming_subscribes_logs_and_is_harmless_twice(make_topic):
    make_topic("news")
    result = contacts.upsert("ann@example.com", topics=["news"])
    token = confirmation.make_token(result.contact, result.outcome.needs_confirmation)
    db.session.commit()

    first = confirmation.confirm(token)
    db.session.commit()
    assert [t.slug for t in first.topics] == ["news"]
    assert {s.topic.slug: s.state for s in first.contact.subscriptions} == {"news": "subscribed"}

    second = confirmation.confirm(token)
    assert second.topics == []
    confirm_events = [e for e in history(first.contact) if e.source == "confirm"]
    assert len(confirm_events) == 1


def test_confirmation_lifts_every_mark_but_bounced(make_topic):
    make_topic("news")
    address_hash = addresses.hash_of("ann@example.com")
    for reason in (Reason.QUARANTINED, Reason.LEFT, Reason.BOUNCED):
        suppressions.suppress(address_hash, reason, source=ConsentSource.OPERATOR)
    result = contacts.upsert("ann@example.com", topics=["news"])
    confirmed = confirmation.confirm(
        confirmation.make_token(result.contact, result.outcome.needs_confirmation)
    )
    assert confirmed.lifted == {"quarantined", "left"}
    assert suppressions.marks(address_hash) == {Reason.BOUNCED}
    states = [e.state for e in history(result.contact) if e.source == "confirm"]
    assert "quarantined_lifted" in states and "left_lifted" in states


def test_expired_token_is_refused(app, make_topic):
    make_topic("news")
    result = contacts.upsert("ann@example.com", topics=["news"])
    token = confirmation.make_token(result.contact, result.outcome.needs_confirmation)
    app.config["MAILER_CONFIRM_MAX_AGE"] = 0
    try:
        time.sleep(1.1)
        with pytest.raises(tokens.TokenExpired):
            confirmation.confirm(token)
    finally:
        del app.config["MAILER_CONFIRM_MAX_AGE"]
    assert {s.state for s in result.contact.subscriptions} == {"pending"}


def test_an_unsubscribe_token_cannot_confirm(make_topic):
    make_topic("news")
    result = contacts.upsert("ann@example.com", topics=["news"])
    payload = {"h": result.contact.address_hash,
               "t": [result.contact.subscriptions[0].topic_id]}
    forged = tokens.sign(tokens.Purpose.UNSUBSCRIBE, payload)
    with pytest.raises(tokens.TokenInvalid):
        confirmation.confirm(forged)
