"""The statements of a create-or-update: the one read of an address, and the writes of a new one.

Creating a contact is the API's busiest write. Its statements are Core, built once, and run on
a connection: the ORM's unit of work and its per-statement dispatch cost several times the
statements themselves. `contacts.services.upsert()` decides, with the consent rules, what is
written, and turns the rows written into the session's objects.

A new address that needs no confirmation mail is written whole: the contact, its first
subscriptions and their consent events. On PostgreSQL that is one statement (data-modifying
CTEs), which `upsert()` runs alone in autocommit when it is all the request writes; on SQLite,
which lacks them, one statement a table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Integer,
    Row,
    String,
    bindparam,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite

from mailer.consent.models import ConsentEvent, Subscription
from mailer.consent.services import INSERT_EVENT
from mailer.contacts.models import Contact
from mailer.suppressions import services as suppressions
from mailer.topics.models import Topic
from mailer.topics.services import in_order

_contacts = Contact.__table__
_topics = Topic.__table__
_subscriptions = Subscription.__table__
_events = ConsentEvent.__table__


@dataclass(frozen=True)
class Probe:
    """What the one read of a create-or-update found."""

    contact_id: int | None  # None: the address is new
    marked: bool  # the address has an address-wide mark
    topics: list[Row[Any]]  # the topics asked for, in the order asked: every column


# Whether the address is known, and whether it has a mark, in one row (a new address, the
# common case, needs nothing else read)...
_KNOWN = select(
    select(_contacts.c.id).where(_contacts.c.email == bindparam("email"))
    .scalar_subquery().label("contact_id"),
    suppressions.is_marked(bindparam("address_hash")).label("marked"),
)
# ...and with the topics asked for, in the same round trip: that row joined to each topic of
# the slugs (a row per topic found; one row, with no topic, when none is).
_known = _KNOWN.subquery("known")
_KNOWN_AND_TOPICS = (
    select(_known.c.contact_id, _known.c.marked, _topics)
    .select_from(_known)
    .outerjoin(_topics, _topics.c.slug.in_(bindparam("slugs", expanding=True)))
)


def probe(connection: Connection, email: str, address_hash: str,
          slugs: list[str] | tuple[str, ...]) -> Probe:
    """The contact id of a normalized address, whether it has a mark, and the topics of the
    slugs, in one statement; an unknown slug raises ValidationFailed naming `topics`, as
    topics_by_slug() does."""
    params: dict[str, Any] = {"email": email, "address_hash": address_hash}
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        contact_id, marked = connection.execute(_KNOWN, params).one()
        return Probe(contact_id, bool(marked), [])
    rows = connection.execute(_KNOWN_AND_TOPICS, {**params, "slugs": wanted}).all()
    # in_order() raises for an unknown slug.
    topics = in_order(wanted, (row for row in rows if row.id is not None))
    return Probe(rows[0].contact_id, bool(rows[0].marked), list(topics.values()))


NEW_CONTACT_COLUMNS = ("email", "address_hash", "attributes", "source", "partner_sharing",
                       "created_at", "updated_at")


def _insert_contact(dialect: Any) -> Any:
    # ON CONFLICT DO NOTHING: the loser of a race for a new address gets no id back and never
    # a unique violation; on PostgreSQL it waits for the winner's commit, on SQLite for its
    # write lock, and then reads the winner's row as any update would.
    return (
        dialect.insert(_contacts)
        .values({column: bindparam(column) for column in NEW_CONTACT_COLUMNS})
        .on_conflict_do_nothing()
        .returning(_contacts.c.id)
    )


INSERT_CONTACT = {"postgresql": _insert_contact(postgresql), "sqlite": _insert_contact(sqlite)}


@dataclass(frozen=True)
class FirstSubscription:
    """A subscription a new contact starts with, and the consent event that records it."""

    topic_id: int
    state: str


@dataclass(frozen=True)
class NewContact:
    """The ids of what write_new() wrote."""

    contact_id: int
    subscription_ids: dict[int, int]  # topic id -> subscription id


def write_new(connection: Connection, contact: dict[str, Any],
              subscriptions: list[FirstSubscription], events: list[dict[str, Any]],
              *, source: str, note: str | None, now: dt.datetime) -> NewContact | None:
    """Write a new contact (`contact`: a value for each of NEW_CONTACT_COLUMNS), its first
    subscriptions and its consent events (each: subject, topic_id, state), in that order;
    None, with nothing written, when the address exists (a concurrent request made it).

    `contact` and each event also carry the address hash; `source`, `note` and `now` are
    the events' (`now` the subscriptions' times too)."""
    if connection.dialect.name == "postgresql":
        return _write_new_in_one_statement(connection, contact, subscriptions, events,
                                           source=source, note=note, now=now)
    contact_id = connection.execute(INSERT_CONTACT["sqlite"], contact).scalar()
    if contact_id is None:
        return None
    subscription_ids: dict[int, int] = {}
    if subscriptions:
        rows = connection.execute(
            _INSERT_SUBSCRIPTIONS,
            [{"contact_id": contact_id, "topic_id": s.topic_id, "state": s.state,
              "created_at": now, "updated_at": now} for s in subscriptions],
        )
        subscription_ids = {row.topic_id: row.id for row in rows}
    if events:
        connection.execute(INSERT_EVENT, [
            {"p_contact": contact_id, "p_hash": contact["address_hash"], "p_subject": e["subject"],
             "p_topic": e["topic_id"], "p_state": e["state"], "p_source": source,
             "p_note": note, "p_now": now} for e in events])
    return NewContact(contact_id, subscription_ids)


_INSERT_SUBSCRIPTIONS = insert(_subscriptions).returning(_subscriptions.c.id,
                                                         _subscriptions.c.topic_id)


def _write_all_in_one_statement() -> Any:
    """PostgreSQL: the contact, its subscriptions and its events as data-modifying CTEs of one
    statement. The subscriptions and events are arrays unnested in order; each joins the
    contact's new row, so nothing is written when the address existed (no row came back)."""
    new_contact = INSERT_CONTACT["postgresql"].cte("new_contact")
    now = bindparam("p_now", type_=_events.c.created_at.type)
    asked = (
        func.unnest(bindparam("p_sub_topics", type_=ARRAY(Integer)),
                    bindparam("p_sub_states", type_=ARRAY(String)))
        .table_valued("topic_id", "state", with_ordinality="position")
        .render_derived(name="asked")
    )
    subscribed = (
        insert(_subscriptions)
        .from_select(
            ["contact_id", "topic_id", "state", "created_at", "updated_at"],
            select(new_contact.c.id, asked.c.topic_id, asked.c.state, now, now)
            .select_from(new_contact).join(asked, true())
            .order_by(asked.c.position),
        )
        .returning(_subscriptions.c.id, _subscriptions.c.topic_id)
        .cte("subscribed")
    )
    logged_rows = (
        func.unnest(bindparam("p_event_subjects", type_=ARRAY(String)),
                    bindparam("p_event_topics", type_=ARRAY(Integer)),
                    bindparam("p_event_states", type_=ARRAY(String)))
        .table_valued("subject", "topic_id", "state", with_ordinality="position")
        .render_derived(name="logged_rows")
    )
    logged = (
        insert(_events)
        .from_select(
            ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "note",
             "created_at"],
            select(new_contact.c.id, bindparam("address_hash"), logged_rows.c.subject,
                   logged_rows.c.topic_id, logged_rows.c.state,
                   bindparam("p_source", type_=_events.c.source.type),
                   bindparam("p_note", type_=_events.c.note.type), now)
            .select_from(new_contact).join(logged_rows, true())
            .order_by(logged_rows.c.position),
        )
        .cte("logged")
    )
    return (
        select(new_contact.c.id.label("contact_id"), subscribed.c.id.label("subscription_id"),
               subscribed.c.topic_id)
        .select_from(new_contact)
        .outerjoin(subscribed, true())
        .add_cte(logged)
    )


_WRITE_ALL = _write_all_in_one_statement()


def _write_new_in_one_statement(connection: Connection, contact: dict[str, Any],
                                subscriptions: list[FirstSubscription],
                                events: list[dict[str, Any]], *, source: str,
                                note: str | None, now: dt.datetime) -> NewContact | None:
    rows = connection.execute(_WRITE_ALL, {
        **contact,
        "p_sub_topics": [s.topic_id for s in subscriptions],
        "p_sub_states": [s.state for s in subscriptions],
        "p_event_subjects": [e["subject"] for e in events],
        "p_event_topics": [e["topic_id"] for e in events],
        "p_event_states": [e["state"] for e in events],
        "p_source": source, "p_note": note, "p_now": now,
    }).all()
    if not rows:
        return None
    return NewContact(rows[0].contact_id,
                      {row.topic_id: row.subscription_id for row in rows
                       if row.subscription_id is not None})
