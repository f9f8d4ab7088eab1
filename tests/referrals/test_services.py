"""referrals.services: the checks, the silent limits, the quarantine, and the outbox scrub."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from sqlalchemy import func, select, update

from mailer import addresses
from mailer.consent.gate import Stage
from mailer.consent.gate import check as gate_check
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.errors import CardNumberRefused, ValidationFailed
from mailer.extensions import db
from mailer.messages.models import Category, Message
from mailer.messages.services import SendRequest, accept
from mailer.referrals import services as referrals
from mailer.referrals.models import Referral
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason, Suppression
from tests.delivery.helpers import FAST
from tests.referrals import deliver

SENDER = "ann@example.com"
FRIEND = "bob.friend@example.org"
ITEM = {"item_name": "Blue Guitar", "item_url": "http://127.0.0.1:5000/p/blue-guitar"}
CARD = "4111 1111 1111 1111"


def refer(sender=SENDER, friend=FRIEND, *, name="Ann", item=None, note="Have a look!"):
    referrals.refer(sender, name, friend, dict(item or ITEM), note)
    db.session.commit()


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def referral_messages() -> list[Message]:
    return list(db.session.scalars(
        select(Message).where(Message.category == Category.REFERRAL).order_by(Message.id)))


def quarantine_mark(address: str = FRIEND) -> Suppression | None:
    return db.session.scalar(select(Suppression).where(
        Suppression.address_hash == addresses.hash_of(address),
        Suppression.reason == Reason.QUARANTINED))


def age_everything(days: float) -> None:
    """Move every referral row and mark back in time, as if `days` had passed."""
    delta = dt.timedelta(days=days)
    for row in [*db.session.scalars(select(Referral)), *db.session.scalars(select(Suppression))]:
        row.created_at -= delta
    db.session.commit()


# --------------------------------------------------------------------- what a referral does

def test_a_referral_queues_one_mail_and_quarantines_the_friend_without_a_contact():
    refer()
    [message] = referral_messages()
    assert message.template == "referral" and message.status == "queued"
    assert message.to_address == FRIEND and message.topic_id is None
    assert message.data == {"sender_name": "Ann", "item_name": "Blue Guitar",
                            "item_url": ITEM["item_url"], "note": "Have a look!"}
    assert count(Contact) == 0
    mark = quarantine_mark()
    assert mark is not None and mark.topic_id is None
    assert abs((utcnow() - mark.created_at).total_seconds()) < 60
    [row] = db.session.scalars(select(Referral)).all()
    # The cap's key: the calling service's API key (0 here) and the sender, hashed.
    assert row.sender_hash == addresses.keyed_hash(
        referrals.api_sender_key(0, addresses.normalize(SENDER)))
    assert row.friend_hash == addresses.hash_of(FRIEND)


def test_addresses_are_normalized_and_the_sender_name_defaults_to_a_friend():
    referrals.refer("  Ann@EXAMPLE.com ", None, "Bob.Friend@Example.ORG", dict(ITEM), None)
    db.session.commit()
    [message] = referral_messages()
    assert message.to_address == FRIEND
    assert message.data["sender_name"] == referrals.DEFAULT_SENDER_NAME == "A friend"
    assert message.data["note"] == ""
    assert db.session.scalar(select(Referral.sender_hash)) == addresses.keyed_hash(
        referrals.api_sender_key(0, addresses.normalize(SENDER)))


def test_the_delivery_stage_lets_the_quarantined_friend_get_the_mail_accept_would_refuse():
    refer()
    friend_hash = addresses.hash_of(FRIEND)
    assert gate_check(friend_hash, Category.REFERRAL, stage=Stage.ACCEPT).reason == "quarantined"
    assert gate_check(friend_hash, Category.REFERRAL, stage=Stage.DELIVERY).allowed


# --------------------------------------------------------------------- checks

@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sender": "not an address"}, "sender_email"),
        ({"sender": ""}, "sender_email"),
        ({"friend": "bob@"}, "recipient_email"),
        ({"friend": "a@example.com\r\nBcc: x@example.com"}, "recipient_email"),
        ({"friend": "ANN@example.com"}, "recipient_email"),  # the sender's own address
        ({"name": ""}, "sender_name"),
        ({"name": "   "}, "sender_name"),
        ({"name": "x" * 101}, "sender_name"),
        ({"name": "Ann\r\nBcc: x@example.com"}, "sender_name"),
        ({"name": "Ann\x07"}, "sender_name"),
        ({"item": {"item_name": "", "item_url": ITEM["item_url"]}}, "item_name"),
        ({"item": {"item_name": "x" * 201, "item_url": ITEM["item_url"]}}, "item_name"),
        ({"item": {"item_name": "Guitar\nSubject: x", "item_url": ITEM["item_url"]}},
         "item_name"),
        ({"item": {"item_name": "Guitar"}}, "item_url"),
        ({"note": "x" * 501}, "note"),
        ({"note": "see http://evil.example/x"}, "note"),
        ({"note": "see www.evil.example"}, "note"),
        ({"note": "bell\x07"}, "note"),
        ({"note": "see evil.example/win"}, "note"),
        ({"note": "write to mailto:x@evil.example"}, "note"),
        ({"note": "write to x@evil.example"}, "note"),  # a mailto: link in every client
        # Every free-text field follows the note's no-links rule: the name and the item's
        # name go into the Subject and both parts of the mail.
        ({"name": "Win at http://evil.example/win"}, "sender_name"),
        ({"name": "Ann (www.evil.example)"}, "sender_name"),
        ({"name": "Ann from EVIL.COM"}, "sender_name"),
        ({"item": {"item_name": "Free prize www.evil.example", "item_url": ITEM["item_url"]}},
         "item_name"),
        ({"item": {"item_name": "Prize at evil.example/win", "item_url": ITEM["item_url"]}},
         "item_name"),
        ({"item": {"item_name": "Guitar hxxp://x javascript:alert(1)",
                   "item_url": ITEM["item_url"]}}, "item_name"),
        # Even a link to the shop itself: only the item's link field may carry one.
        ({"item": {"item_name": f"Guitar {ITEM['item_url']}", "item_url": ITEM["item_url"]}},
         "item_name"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(overrides, field):
    args = {"sender": SENDER, "friend": FRIEND, "name": "Ann", "item": ITEM, "note": None}
    args.update(overrides)
    with pytest.raises(ValidationFailed) as caught:
        referrals.refer(args["sender"], args["name"], args["friend"], dict(args["item"]),
                        args["note"])
    assert field in caught.value.fields
    assert type(caught.value) is ValidationFailed
    db.session.rollback()
    assert count(Message) == count(Referral) == count(Suppression) == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/p/1",
        "http://127.0.0.1:5000.evil.example/p/1",
        "http://127.0.0.1:5000@evil.example/p/1",
        "http://user@127.0.0.1:5000/p/1",
        "http://127.0.0.1:5001/p/1",
        "http://127.0.0.1/p/1",
        "https://127.0.0.1:5000/p/1",  # another scheme is another origin
        "//127.0.0.1:5000/p/1",
        "/p/1",
        "javascript:alert(1)//http://127.0.0.1:5000/",
        "ftp://127.0.0.1:5000/p/1",
        "http://127.0.0.1:5000/p/1 http://evil.example/",
        "http://127.0.0.1:5000\\@evil.example/",
        "http://127.0.0.1:99999/p/1",
    ],
)
def test_only_links_on_the_shop_origin_can_be_recommended(url):
    assert not referrals.is_shop_url(url)
    with pytest.raises(ValidationFailed) as caught:
        referrals.check(SENDER, "Ann", FRIEND, {"item_name": "x", "item_url": url}, None)
    assert set(caught.value.fields) == {"item_url"}


def test_the_shop_origin_is_mailer_shop_url_when_set_with_its_path(app, monkeypatch):
    assert referrals.is_shop_url("http://127.0.0.1:5000/p/1")
    assert referrals.is_shop_url("HTTP://127.0.0.1:5000")
    monkeypatch.setitem(app.config, "MAILER_SHOP_URL", "https://Shop.Example/store")
    assert referrals.is_shop_url("https://shop.example/store/p/1?colour=blue#top")
    assert referrals.is_shop_url("https://shop.example:443/store")
    assert not referrals.is_shop_url("https://shop.example/storefront/p/1")
    assert not referrals.is_shop_url("https://shop.example/p/1")
    assert not referrals.is_shop_url("http://shop.example/store/p/1")
    assert not referrals.is_shop_url("http://127.0.0.1:5000/p/1")


def test_card_numbers_are_refused_in_any_field():
    for overrides in ({"name": f"Ann {CARD}"}, {"note": f"pay with {CARD}"},
                      {"item": {"item_name": CARD, "item_url": ITEM["item_url"]}}):
        args = {"name": "Ann", "item": ITEM, "note": None, **overrides}
        with pytest.raises(CardNumberRefused) as caught:
            referrals.refer(SENDER, args["name"], FRIEND, dict(args["item"]), args["note"])
        assert len(caught.value.fields) == 1
    db.session.rollback()
    assert count(Message) == 0


def test_a_note_of_500_characters_counts_each_line_break_once():
    note = ("x" * 49 + "\r\n") * 10  # 500 characters once CRLF is one line break
    refer(note=note)
    assert referral_messages()[0].data["note"] == ("x" * 49 + "\n") * 9 + "x" * 49


def test_missing_settings_are_an_error_whatever_the_limits_say(app, monkeypatch):
    refer()
    monkeypatch.setitem(app.config, "MAILER_POSTAL_ADDRESS", None)
    with pytest.raises(ValidationFailed) as caught:
        refer(sender="carol@example.com")  # would be dropped: the friend had one today
    assert caught.value.code == "not_configured"


# --------------------------------------------------------------------- limits, all silent

def test_one_referral_per_friend_per_30_days_whoever_sends_it():
    refer()
    for sender in ("carol@example.com", "dave@example.com"):
        refer(sender=sender)
    assert len(referral_messages()) == 1
    assert count(Referral) == 1
    age_everything(days=29)
    refer(sender="erin@example.com")
    assert len(referral_messages()) == 1
    age_everything(days=2)
    refer(sender="erin@example.com")
    assert len(referral_messages()) == 2


def test_an_old_quarantine_mark_is_refreshed_by_the_next_referral():
    refer()
    age_everything(days=31)
    old = quarantine_mark().created_at
    refer(sender="carol@example.com")
    assert len(referral_messages()) == 2
    db.session.expire_all()
    marks = db.session.scalars(select(Suppression).where(
        Suppression.reason == Reason.QUARANTINED)).all()
    assert len(marks) == 1
    assert marks[0].created_at > old + dt.timedelta(days=30)


def test_the_sender_daily_cap_counts_a_rolling_24_hours(app, monkeypatch):
    for n in range(7):
        refer(friend=f"friend{n}@example.org")
    assert len(referral_messages()) == app.config["MAILER_REFERRAL_DAILY_CAP"] == 5
    assert quarantine_mark("friend5@example.org") is None  # dropped: nothing set
    age_everything(days=0.5)
    refer(friend="friend7@example.org")
    assert len(referral_messages()) == 5
    age_everything(days=0.55)
    refer(friend="friend8@example.org")
    assert len(referral_messages()) == 6
    monkeypatch.setitem(app.config, "MAILER_REFERRAL_DAILY_CAP", 1)
    refer(friend="friend9@example.org")
    assert len(referral_messages()) == 6


@pytest.mark.parametrize("reason", [Reason.BOUNCED, Reason.COMPLAINED, Reason.LEFT,
                                    Reason.ERASED, Reason.BLOCKED])
def test_a_friend_the_gate_refuses_is_dropped_and_nothing_else_changes(reason):
    suppressions.suppress(addresses.hash_of(FRIEND), reason, source=ConsentSource.OPERATOR)
    db.session.commit()
    refer()
    assert referral_messages() == []
    assert count(Referral) == 0 and quarantine_mark() is None


def test_a_subscribed_friend_is_not_quarantined_and_keeps_getting_the_topic(make_topic):
    make_topic("deals", double_opt_in=False)
    contacts.upsert(FRIEND, topics=["deals"], channel=ConsentSource.API, source="checkout")
    db.session.commit()
    refer()
    assert len(referral_messages()) == 1
    assert quarantine_mark() is None
    contact = db.session.scalar(select(Contact))
    assert [s.state for s in contact.subscriptions] == [SubscriptionState.SUBSCRIBED]
    accept(SendRequest(to=FRIEND, template="newsletter", data={"headline": "h", "intro": "i"},
                       category=Category.PROMOTIONAL, topic="deals"))
    # Still one referral per 30 days, from the referrals table.
    refer(sender="carol@example.com")
    assert len(referral_messages()) == 1


def test_a_contact_that_is_only_pending_is_quarantined(make_topic):
    make_topic("news", double_opt_in=True)
    contacts.upsert(FRIEND, topics=["news"], channel=ConsentSource.API, source="checkout")
    db.session.commit()
    refer()
    mark = quarantine_mark()
    assert mark is not None
    contact = db.session.scalar(select(Contact))
    assert contact.subscriptions[0].state == SubscriptionState.PENDING


def test_purge_removes_only_rows_no_limit_reads():
    refer()
    refer(friend="carol@example.org")
    db.session.execute(update(Referral).where(Referral.friend_hash == addresses.hash_of(FRIEND))
                       .values(created_at=utcnow() - dt.timedelta(days=31)))
    assert referrals.purge_expired() == 1
    db.session.commit()
    assert db.session.scalar(select(Referral.friend_hash)) == addresses.hash_of(
        "carol@example.org")


# --------------------------------------------------------------------- the outbox scrub

def test_a_sent_referral_keeps_no_plaintext_of_the_friend(app, smtp):
    refer()
    deliver(app, smtp.url)
    [message] = referral_messages()
    assert message.status == "sent"
    assert message.to_address is None and message.data == {}
    assert [m.rcpt_tos for m in smtp.messages] == [[FRIEND]]


def test_a_referral_that_fails_for_good_keeps_no_plaintext_either(app, smtp):
    smtp.script_rcpt(FRIEND, [f"550 5.1.1 <{FRIEND}> no such user"])
    refer()
    deliver(app, smtp.url)
    [message] = referral_messages()
    assert message.status == "failed"
    assert message.to_address is None and message.data == {}
    assert FRIEND not in (message.last_error or "")


def test_a_referral_suppressed_at_delivery_keeps_no_plaintext_either(app, smtp):
    refer()
    # The friend blocks the address (say, from an earlier mail) before the worker gets to it.
    suppressions.suppress(addresses.hash_of(FRIEND), Reason.BLOCKED,
                          source=ConsentSource.ONE_CLICK)
    db.session.commit()
    deliver(app, smtp.url)
    [message] = referral_messages()
    assert (message.status, message.last_error) == ("suppressed", "blocked")
    assert message.to_address is None and message.data == {}
    assert smtp.messages == []


def test_a_deferred_referral_keeps_its_recipient_until_it_is_final(app, smtp):
    smtp.script_rcpt(FRIEND, ["451 4.3.0 try later"])
    refer()
    deliver(app, smtp.url, dataclasses.replace(FAST, retry_backoff=600))
    [message] = referral_messages()
    assert message.status == "deferred" and message.to_address == FRIEND


# --------------------------------------------------------------------- at the same time

def _at_once(app, calls) -> list[BaseException]:
    """Run each (sender, friend) referral in its own thread and session, all released at once."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(sender: str, friend: str) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=10)
                refer(sender=sender, friend=friend)
                db.session.remove()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    db.session.remove()
    threads = [threading.Thread(target=run, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_referrals_to_one_friend_at_the_same_moment_still_send_one_mail(app):
    errors = _at_once(app, [(f"sender{n}@example.com", FRIEND) for n in range(8)])
    assert errors == []
    assert len(referral_messages()) == 1 and count(Referral) == 1


def test_one_sender_at_the_same_moment_still_meets_the_daily_cap(app):
    errors = _at_once(app, [(SENDER, f"friend{n}@example.org") for n in range(8)])
    assert errors == []
    assert len(referral_messages()) == 5 and count(Referral) == 5


@pytest.mark.parametrize(
    ("name", "item_name", "note"),
    [("A. Friend", "Node.js Handbook", "My data: you will love it. See you at 10:30!"),
     ("Ann-Marie O'Neil", "Guitar Pro 7.5 (2019 ed.)", "e.g. the red one, Vol. 2"),
     ("Ann", "Blue Guitar", "Mail me @ the shop: ask for Bob.")],
)
def test_ordinary_text_with_dots_and_colons_is_not_taken_for_a_link(name, item_name, note):
    checked = referrals.check(SENDER, name, FRIEND,
                              {"item_name": item_name, "item_url": ITEM["item_url"]}, note)
    assert (checked.sender_name, checked.item_name, checked.note) == (name, item_name, note)


@pytest.mark.parametrize("text_value", [
    # Issue 15: a short list of top-level domains let these through.
    "see evil.page", "win at x.vip", "evil.zip", "shop.example.co.uk.", "EVIL.Page",
    # Dots a client (IDNA) or a person reading it takes for a dot.
    "evil\uff0epage", "evil\u3002page", "\uff45\uff56\uff49\uff4c\uff0e\uff50\uff41\uff47\uff45",
    "evil\u200b.page",  # an invisible character inside
    # Defanged links, which a person makes whole by retyping them.
    "evil[.]page", "evil(dot)page", "hxxp evil page", "hxxps[:]//evil[.]example",
    "xn--80ak6aa92e.xn--p1ai",
])
def test_anything_that_looks_like_a_link_is_refused_whatever_its_top_level_domain(text_value):
    assert referrals.holds_link(text_value)


@pytest.mark.parametrize("text_value", [
    "Node.js Handbook", "i.e. the U.S. version, e.g. the red one", "See you at 10 a.m.!",
    "It costs 3.50 \u20ac, ok?", "Thanks... really!", "Version 2.0 is out. Enjoy",
    "evil dot com (no client links this)", "Dr. No, Vol. 2",
])
def test_ordinary_sentences_are_not_links(text_value):
    assert not referrals.holds_link(text_value)


def test_finding_links_stays_fast_on_the_longest_texts():
    # The pattern must not backtrack badly on text built to make it try every split.
    import time

    started = time.perf_counter()
    for text_value in ("a." * 250, "a-" * 250, "ab." * 166 + "!", "a" * 500):
        assert not referrals.holds_link(text_value)
    assert time.perf_counter() - started < 1.0
