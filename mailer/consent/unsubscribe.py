"""Unsubscribing through a link in a mail: the token says who and from what.

Tokens never expire and keep working after the contact is erased: then the
unsubscribe is kept as a suppression of the address hash.

The link in the List-Unsubscribe header is POSTed by mail providers (RFC 8058), often
in bursts as a campaign goes out, and almost always finds a subscribed address. That
case is one conditional UPDATE, the INSERT of its consent event and the campaign's
counter, written with Core statements built once (on PostgreSQL as one statement, on
SQLite on the driver's cursor), on a connection of their own when nothing else of the
request's waits to commit; a repeated click costs the UPDATE and one read. Every other
case (a pending or missing subscription, an erased contact, a Tell-a-Friend link, "all
mail") goes through the consent services with the ORM, as the rest of the code does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, exists, insert, literal, select, update

from mailer.autocommit import run_alone
from mailer.campaigns.models import Campaign
from mailer.consent import services as consent
from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    Subscription,
    SubscriptionState,
)
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.driver_statements import DriverStatement
from mailer.extensions import autoflush, db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.tokens import Purpose, TokenInvalid, verify
from mailer.topics.models import Topic


class Scope(enum.Enum):
    TOPIC = "topic"  # the topic of the mail the link came in
    ALL = "all"  # every topic, and a `left` mark so nothing promotional follows


@dataclass(frozen=True)
class LinkTarget:
    """Whom an unsubscribe link speaks for, read from its token (nothing from the database)."""

    address_hash: str
    topic_id: int | None  # None: a Tell-a-Friend mail's "never mail me again"
    campaign_id: int | None = None


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did, for the answer page."""

    scope: Scope
    topic_name: str | None  # the topic left; None for "all mail" and for a blocked address


def read_token(token: str) -> LinkTarget:
    """Resolve an unsubscribe token; raises TokenInvalid for anything not made by us.

    Only the signature is checked: whether the address and topic still exist is the
    business of `unsubscribe()`, which reads them in the statements that act on them.
    """
    payload = verify(Purpose.UNSUBSCRIBE, token)
    if not isinstance(payload, dict) or not isinstance(payload.get("h"), str):
        raise TokenInvalid("malformed payload")
    topic_id = payload.get("t")
    campaign_id = payload.get("c")
    return LinkTarget(payload["h"], topic_id if _is_id(topic_id) else None,
                      campaign_id if _is_id(campaign_id) else None)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def topic_name(target: LinkTarget) -> str | None:
    """The name of the link's topic, for the page that asks before unsubscribing; None for
    a link without one (or whose topic is gone: such a link blocks, see unsubscribe())."""
    if target.topic_id is None:
        return None
    return db.session.execute(_TOPIC_NAME, {"p_topic": target.topic_id}).scalar()


# Built once, with bind parameters: compiled once per process and reused from the cache.
_subscriptions = Subscription.__table__
_contacts = Contact.__table__
_topics = Topic.__table__
_events = ConsentEvent.__table__
_campaigns = Campaign.__table__

_TOPIC_NAME = select(_topics.c.name).where(_topics.c.id == bindparam("p_topic"))

# The subscription row of the link's address and topic, found through the unique
# (contact_id, topic_id) key. Asked as "topic and state and contact" instead, PostgreSQL
# walks the topic's subscribers through (topic_id, state): a cost growing with the topic.
_LINK_SUBSCRIPTION = (
    select(_subscriptions.c.id)
    .join(_contacts, _contacts.c.id == _subscriptions.c.contact_id)
    .where(_contacts.c.address_hash == bindparam("p_hash"),
           _subscriptions.c.topic_id == bindparam("p_topic"))
    .scalar_subquery()
)

# subscribed -> unsubscribed, in one statement that also tells whether it happened: no row
# back means the subscription was not `subscribed` (already left, pending, missing, or no
# contact). The state in the WHERE makes two concurrent clicks change, log and count it once.
_LEAVE = (
    update(_subscriptions)
    .where(_subscriptions.c.id == _LINK_SUBSCRIPTION,
           _subscriptions.c.state == SubscriptionState.SUBSCRIBED.value)
    .values(state=SubscriptionState.UNSUBSCRIBED.value,
            updated_at=bindparam("p_now", type_=_subscriptions.c.updated_at.type))
)

_COUNT_CAMPAIGN_UNSUBSCRIBE = (
    update(_campaigns)
    .where(_campaigns.c.id == bindparam("p_campaign"))
    .values(unsubscribed=_campaigns.c.unsubscribed + 1,
            # Its onupdate, said here: a DriverStatement runs no Python-side defaults.
            updated_at=bindparam("p_now", type_=_campaigns.c.updated_at.type))
)

# SQLite: the UPDATE answers with the contact (for the event) and the topic's name (for the
# page); the event and the campaign's counter follow as statements of their own.
_LEAVE_RETURNING = _LEAVE.returning(
    _subscriptions.c.contact_id,
    select(_topics.c.name).where(_topics.c.id == _subscriptions.c.topic_id)
    .scalar_subquery().label("name"),
)


def _leave_log_and_count() -> Select[tuple[int, str]]:
    """PostgreSQL: the UPDATE, the consent event and the campaign's counter in one statement
    (data-modifying CTEs, which SQLite lacks), answering as _LEAVE_RETURNING does. Each
    statement is a round trip to the server and back, and costs both sides more CPU than
    the work it carries; the campaign's UPDATE matches no row when there is no campaign."""
    left = (_LEAVE.returning(_subscriptions.c.contact_id, _subscriptions.c.topic_id)
            .cte("left_topic"))
    logged = insert(_events).from_select(
        ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "created_at"],
        select(left.c.contact_id, bindparam("p_hash", type_=_events.c.address_hash.type),
               literal(ConsentSubject.TOPIC.value), left.c.topic_id,
               literal(SubscriptionState.UNSUBSCRIBED.value),
               bindparam("p_source", type_=_events.c.source.type),
               bindparam("p_now", type_=_events.c.created_at.type)),
    ).cte("logged")
    counted = _COUNT_CAMPAIGN_UNSUBSCRIBE.where(exists(select(left.c.contact_id))).cte("counted")
    return (select(left.c.contact_id, _topics.c.name)
            .join_from(left, _topics, _topics.c.id == left.c.topic_id)
            .add_cte(logged, counted))


_LEAVE_LOG_AND_COUNT = _leave_log_and_count()

# Where the link's address stands on the link's topic, when the UPDATE changed nothing: one
# row if the topic exists (contact and subscription columns NULL when there are none).
_STANDING = (
    select(_topics.c.name, _contacts.c.id, _subscriptions.c.state)
    .select_from(_topics)
    .outerjoin(_contacts, _contacts.c.address_hash == bindparam("p_hash"))
    .outerjoin(_subscriptions, (_subscriptions.c.contact_id == _contacts.c.id)
               & (_subscriptions.c.topic_id == _topics.c.id))
    .where(_topics.c.id == bindparam("p_topic"))
)


def unsubscribe(target: LinkTarget, scope: Scope, source: ConsentSource) -> Unsubscribed:
    """Withdraw consent as the link holder asked; repeating it changes nothing more.

    A link without a topic comes from a Tell-a-Friend mail: it means "never mail
    me again" and marks the address `blocked`. A campaign's link adds one to the
    campaign's unsubscribe count when it ends a subscription (a count, never who).
    The request owns the commit, but for one case: with no transaction of the session
    open, the common one-click (on PostgreSQL one statement) commits on its own.
    """
    if scope is Scope.TOPIC and target.topic_id is not None:
        done = _leave_topic(target, source)
        if done is not None:
            return done
    return _unsubscribe_loaded(target, scope, source)


def _leave_topic(target: LinkTarget, source: ConsentSource) -> Unsubscribed | None:
    """The one-click's common cases in Core statements: a subscribed address leaves the
    topic, or a repeated click finds it gone already. None for anything else."""
    autoflush()  # Core statements do not flush: anything pending in the session goes first
    params = {"p_topic": target.topic_id, "p_hash": target.address_hash, "p_now": utcnow(),
              "p_source": source.value, "p_campaign": target.campaign_id}
    if db.session().in_transaction():
        # The session's connection: its transaction, committed by the request, and no ORM
        # dispatch per statement.
        return _leave_topic_on(db.session.connection(), params)
    # Nothing else of the request's is waiting to commit: the statements commit on a
    # connection of their own, and the session (begun, a transaction of its own to set up
    # and end) is left untouched. On PostgreSQL that is one statement in autocommit, without
    # the round trips of BEGIN, COMMIT and the pool's ping (the one-click is the busiest
    # page); run twice, it finds the address gone already.
    return run_alone(lambda alone: _leave_topic_on(alone, params))


def _leave_topic_on(connection: Connection, params: dict[str, Any]) -> Unsubscribed | None:
    # On the driver's cursor (mailer.driver_statements), which spares the SQLAlchemy dispatch
    # that costs about as much as the database's own work here.
    if connection.dialect.name == "postgresql":
        left = _first(_RUN_LEAVE_LOG_AND_COUNT.rows(connection, params))
    else:
        left = _first(_RUN_LEAVE_RETURNING.rows(connection, params))
        if left is not None:
            consent.RUN_INSERT_EVENT.rows(connection, {
                **params, "p_contact": left.contact_id, "p_subject": ConsentSubject.TOPIC.value,
                "p_state": SubscriptionState.UNSUBSCRIBED.value, "p_note": None})
            if params["p_campaign"] is not None:
                _RUN_COUNT_CAMPAIGN_UNSUBSCRIBE.rows(connection, params)
    if left is not None:
        return Unsubscribed(Scope.TOPIC, left.name)
    standing = _first(_RUN_STANDING.rows(connection, params))
    if standing is not None and standing.state == SubscriptionState.UNSUBSCRIBED:
        return Unsubscribed(Scope.TOPIC, standing.name)
    return None  # pending, no row, no contact, or no such topic


def _first(rows: list[Any]) -> Any:
    return rows[0] if rows else None


_RUN_LEAVE_RETURNING = DriverStatement(_LEAVE_RETURNING)
_RUN_LEAVE_LOG_AND_COUNT = DriverStatement(_LEAVE_LOG_AND_COUNT)
_RUN_STANDING = DriverStatement(_STANDING)
_RUN_COUNT_CAMPAIGN_UNSUBSCRIBE = DriverStatement(_COUNT_CAMPAIGN_UNSUBSCRIBE)


def _unsubscribe_loaded(target: LinkTarget, scope: Scope, source: ConsentSource) -> Unsubscribed:
    """Every other case, with the contact and topic loaded, through the consent services."""
    topic = db.session.get(Topic, target.topic_id) if target.topic_id is not None else None
    contact = db.session.scalar(
        select(Contact).where(Contact.address_hash == target.address_hash))
    subscribed_before = _subscribed_topics(contact)
    if scope is Scope.ALL:
        if contact is not None:
            topics = [s.topic for s in contact.subscriptions
                      if s.state != SubscriptionState.UNSUBSCRIBED]
            consent.unsubscribe(contact, topics, source=source)
            # "Everything" says "no partner sharing" too (CONSENT.md: `left` withdraws it).
            consent.set_partner_sharing(contact, False, source=source)
        suppressions.suppress(target.address_hash, Reason.LEFT, source=source,
                              contact_id=contact.id if contact else None)
    elif topic is None:
        # A Tell-a-Friend link, or (never made by this code) a link whose topic is gone:
        # "never mail me again", for the address as a whole.
        suppressions.suppress(target.address_hash, Reason.BLOCKED, source=source,
                              contact_id=contact.id if contact else None)
    elif contact is not None:
        consent.unsubscribe(contact, [topic], source=source)
    else:
        suppressions.suppress(target.address_hash, Reason.UNSUBSCRIBED, source=source,
                              topic_id=topic.id)
    if target.campaign_id is not None and subscribed_before - _subscribed_topics(contact):
        db.session.execute(_COUNT_CAMPAIGN_UNSUBSCRIBE,
                           {"p_campaign": target.campaign_id, "p_now": utcnow()})
    db.session.flush()
    return Unsubscribed(scope, topic.name if topic is not None and scope is Scope.TOPIC
                        else None)


def _subscribed_topics(contact: Contact | None) -> set[int]:
    if contact is None:
        return set()
    return {s.topic_id for s in contact.subscriptions if s.state == SubscriptionState.SUBSCRIBED}

