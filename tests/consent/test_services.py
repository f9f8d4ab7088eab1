"""Subscription requests follow ../shared/CONSENT.md: marks force `pending`, imports never
override an unsubscribe, every change is logged."""

from __future__ import annotations

import pytest

from mailer.consent.models import ConsentSource
from mailer.consent.services import RequestKind, history
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason


def states(contact):
    return {s.topic.slug: s.state for s in contact.subscriptions}


def test_single_opt_in_topic_subscribes_and_double_opt_in_stays_pending(make_topic):
    make_topic("deals", double_opt_in=False)
    make_topic("news", double_opt_in=True)
    result = contacts.upsert("ann@example.com", topics=["deals", "news"], source="checkout")
    assert states(result.contact) == {"deals": "subscribed", "news": "pending"}
    assert [t.slug for t in result.outcome.needs_confirmation] == ["news"]


@pytest.mark.parametrize(
    "reason",
    [Reason.COMPLAINED, Reason.LEFT, Reason.ERASED, Reason.BLOCKED, Reason.QUARANTINED,
     Reason.BOUNCED],
)
def test_a_marked_address_only_ever_gets_pending(make_topic, reason):
    make_topic("deals", double_opt_in=False)
    from mailer import addresses

    suppressions.suppress(addresses.hash_of("ann@example.com"), reason,
                          source=ConsentSource.OPERATOR)
    for kind in RequestKind:
        result = contacts.upsert("ann@example.com", topics=["deals"], kind=kind)
        assert states(result.contact) == {"deals": "pending"}, kind
    # The mark is still there: adding the address did not lift it.
    assert reason in suppressions.marks(result.contact.address_hash)


def test_after_an_unsubscribe_import_keeps_it_and_the_api_asks_for_confirmation(make_topic):
    make_topic("deals", double_opt_in=False)
    contact = contacts.upsert("ann@example.com", topics=["deals"]).contact
    contacts.update(contact, subscriptions={"deals": "unsubscribed"})
    imported = contacts.upsert("ann@example.com", topics=["deals"], kind=RequestKind.IMPORTED,
                               channel=ConsentSource.IMPORT)
    assert states(imported.contact) == {"deals": "unsubscribed"}
    assert imported.outcome.kept_unsubscribed == ["deals"]
    asked = contacts.upsert("ann@example.com", topics=["deals"])
    assert states(asked.contact) == {"deals": "pending"}
    assert [t.slug for t in asked.outcome.needs_confirmation] == ["deals"]


def test_every_change_is_logged_with_its_source_and_no_change_logs_nothing(make_topic):
    make_topic("deals", double_opt_in=False)
    contact = contacts.upsert("ann@example.com", topics=["deals"], source="checkout",
                              partner_sharing=True).contact
    contacts.upsert("ann@example.com", topics=["deals"], partner_sharing=True)  # no change
    contacts.update(contact, subscriptions={"deals": "unsubscribed"}, partner_sharing=False,
                    channel=ConsentSource.PREFERENCES)
    db.session.commit()
    logged = [(e.subject, e.state, e.source, e.note) for e in history(contact)]
    assert logged == [
        ("partner_sharing", "granted", "api", "checkout"),
        ("topic", "subscribed", "api", "checkout"),
        ("partner_sharing", "withdrawn", "preferences", None),
        ("topic", "unsubscribed", "preferences", None),
    ]


def test_partner_sharing_is_never_true_by_default(make_topic):
    contact = contacts.upsert("ann@example.com").contact
    assert contact.partner_sharing is False
    assert [e for e in history(contact) if e.subject == "partner_sharing"] == []
