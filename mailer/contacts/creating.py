"""The statements of a create-or-update: the one read of an address, and the writes of a new one.

Creating a contact is the API's busiest write. Its statements are Core, built once, and run on
a connection (on SQLite on the driver's cursor, see `mailer.driver_statements`): the ORM's unit
of work and SQLAlchemy's per-statement dispatch cost several times the statements themselves.
`contacts.services.upsert()` decides, with the consent rules, what is written, and turns the
rows written into the session's objects.

A new address that needs no confirmation mail is written whole: the contact, its first
subscriptions and their consent events. On SQLite that is the probe, then a statement a table.
On PostgreSQL the probe and the writes are one statement (data-modifying CTEs), which writes
only where the consent rules, as `upsert()` passes them in, subscribe every topic asked for
at once; `upsert()` runs it alone in autocommit when it is all the request writes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    Connection,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

from mailer.consent.models import ConsentEvent, ConsentSubject, Subscription, SubscriptionState
from mailer.consent.services import RUN_INSERT_EVENT
from mailer.contacts.models import Contact
from mailer.driver_statements import DriverStatement
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
    # The topics asked for, in the order asked: rows of every column (attributes by column
    # name, and _asdict()).
    topics: list[Any]


def _known(email: Any, address_hash: Any) -> Select[tuple[int | None, bool]]:
    """Whether the address is known, and whether it has a mark, in one row (a new address,
    the common case, needs nothing else read)."""
    return select(
        select(_contacts.c.id).where(_contacts.c.email == email)
        .scalar_subquery().label("contact_id"),
        suppressions.is_marked(address_hash).label("marked"),
    )


_KNOWN = _known(bindparam("email"), bindparam("address_hash"))
# With the topics asked for, in the same round trip: that row joined to each topic of
# the slugs (a row per topic found; one row, with no topic, when none is). The slugs are one
# JSON array: a list of bound values ("expanding") would have the SQL rewritten every time.
_known_row = _KNOWN.subquery("known")
_slugs = func.json_each(bindparam("slugs_json", type_=String)).table_valued("value")
_KNOWN_AND_TOPICS = (
    select(_known_row.c.contact_id, _known_row.c.marked, _topics)
    .select_from(_known_row)
    .outerjoin(_topics, _topics.c.slug.in_(select(_slugs.c.value)))
)


_RUN_KNOWN = DriverStatement(_KNOWN)
_RUN_KNOWN_AND_TOPICS = DriverStatement(_KNOWN_AND_TOPICS)


def probe(connection: Connection, email: str, address_hash: str,
          slugs: list[str] | tuple[str, ...]) -> Probe:
    """SQLite: the contact id of a normalized address, whether it has a mark, and the topics
    of the slugs, in one statement; an unknown slug raises ValidationFailed naming `topics`,
    as topics_by_slug() does."""
    params: dict[str, Any] = {"email": email, "address_hash": address_hash}
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        contact_id, marked = _RUN_KNOWN.rows(connection, params)[0]
        return Probe(contact_id, bool(marked), [])
    rows = _RUN_KNOWN_AND_TOPICS.rows(connection, {**params, "slugs_json": json.dumps(wanted)})
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
class NewContact:
    """The ids of what write_new() or probe_and_write_new() wrote."""

    contact_id: int
    subscription_ids: dict[int, int]  # topic id -> subscription id


def write_new(connection: Connection, contact: dict[str, Any], topic_ids: list[int], *,
              partner_sharing: bool, source: str, note: str | None,
              now: dt.datetime) -> NewContact | None:
    """SQLite: write a new contact (`contact`: a value for each of NEW_CONTACT_COLUMNS), its
    subscriptions to the topics, each `subscribed`, and its consent events: the
    partner-sharing grant first when `partner_sharing`, then a topic's, in the order given.
    None, with nothing written, when the address exists (a concurrent request made it).

    `source`, `note` and `now` are the events' (`now` the subscriptions' times too)."""
    inserted = _RUN_INSERT_CONTACT.rows(connection, contact)
    if not inserted:
        return None
    contact_id = inserted[0].id
    subscription_ids: dict[int, int] = {}
    if topic_ids:
        rows = _RUN_INSERT_SUBSCRIPTIONS.rows(connection, {
            "contact_id": contact_id, "topic_ids_json": json.dumps(topic_ids), "now": now})
        subscription_ids = {row.topic_id: row.id for row in rows}
    subscribed = SubscriptionState.SUBSCRIBED.value
    events = [(ConsentSubject.PARTNER_SHARING.value, None, "granted")] if partner_sharing else []
    events += [(ConsentSubject.TOPIC.value, topic_id, subscribed) for topic_id in topic_ids]
    RUN_INSERT_EVENT.run_many(connection, (
        {"p_contact": contact_id, "p_hash": contact["address_hash"], "p_subject": subject,
         "p_topic": topic_id, "p_state": state, "p_source": source, "p_note": note,
         "p_now": now} for subject, topic_id, state in events))
    return NewContact(contact_id, subscription_ids)


_RUN_INSERT_CONTACT = DriverStatement(INSERT_CONTACT["sqlite"])
# Every topic's subscription in one statement: the topic ids are one JSON array, in order.
_topic_ids = func.json_each(bindparam("topic_ids_json", type_=String)).table_valued(
    "key", "value")
_now = bindparam("now", type_=_subscriptions.c.created_at.type)
_RUN_INSERT_SUBSCRIPTIONS = DriverStatement(
    insert(_subscriptions)
    .from_select(
        ["contact_id", "topic_id", "state", "created_at", "updated_at"],
        select(bindparam("contact_id", type_=Integer), _topic_ids.c.value.cast(Integer),
               literal(SubscriptionState.SUBSCRIBED.value),
               _now, _now)
        .order_by(_topic_ids.c.key),
    )
    .returning(_subscriptions.c.id, _subscriptions.c.topic_id)
)

# Whether a new address's request for a topic subscribes it at once, by (the address has a
# mark, the topic wants double opt-in): consent.services.requested_state()'s answers for the
# request's kind, which the one statement below looks up and never decides itself.
SubscribesAtOnce = dict[tuple[bool, bool], bool]


def _probe_and_write_statement() -> Any:
    """PostgreSQL: probe() and write_new() in one statement.

    `asked` holds the topics of the slugs, `known` the address's contact and mark. The
    contact is inserted only when the address is new, every slug is a topic and the rules
    passed in subscribe each of them at once (no confirmation mail is due); its subscriptions
    and consent events join its new row, so without one nothing is written. The answer is
    probe()'s, a row per topic found (or one row), with the ids of what was written."""
    email = bindparam("email", type_=_contacts.c.email.type)
    address_hash = bindparam("address_hash", type_=_contacts.c.address_hash.type)
    now = bindparam("p_now", type_=_events.c.created_at.type)
    wanted = (func.unnest(bindparam("p_slugs", type_=ARRAY(String)))
              .table_valued("slug", with_ordinality="position").render_derived(name="wanted"))
    asked = (select(_topics, wanted.c.position).select_from(wanted)
             .join(_topics, _topics.c.slug == wanted.c.slug).cte("asked"))
    known = _known(email, address_hash).cte("known")
    subscribes = case(
        (and_(known.c.marked, asked.c.double_opt_in), bindparam("p_marked_double", Boolean)),
        (known.c.marked, bindparam("p_marked_single", Boolean)),
        (asked.c.double_opt_in, bindparam("p_double", Boolean)),
        else_=bindparam("p_single", Boolean),
    )
    whole = and_(
        known.c.contact_id.is_(None),
        select(func.count()).select_from(asked).scalar_subquery() == bindparam("p_count"),
        ~select(asked.c.id).where(~subscribes).correlate(known).exists(),
        # A retired topic takes no new subscription (upsert() then refuses the request).
        ~select(asked.c.id).where(asked.c.retired_at.is_not(None)).exists(),
    )
    values = {"email": email, "address_hash": address_hash}
    new_contact = (
        postgresql.insert(_contacts)
        .from_select(list(NEW_CONTACT_COLUMNS), select(*(
            values.get(column, bindparam(column, type_=_contacts.c[column].type))
            for column in NEW_CONTACT_COLUMNS)).select_from(known).where(whole))
        .on_conflict_do_nothing()
        .returning(_contacts.c.id)
        .cte("new_contact")
    )
    subscribed = (
        insert(_subscriptions)
        .from_select(
            ["contact_id", "topic_id", "state", "created_at", "updated_at"],
            select(new_contact.c.id, asked.c.id, literal(SubscriptionState.SUBSCRIBED.value),
                   now, now)
            .select_from(new_contact).join(asked, true()).order_by(asked.c.position),
        )
        .returning(_subscriptions.c.id, _subscriptions.c.topic_id)
        .cte("subscribed")
    )
    # The partner-sharing grant first, then a subscription's event a topic, in the order asked.
    events = union_all(
        select(literal(0).label("position"),
               literal(ConsentSubject.PARTNER_SHARING.value).label("subject"),
               null().cast(Integer).label("topic_id"), literal("granted").label("state"))
        .where(bindparam("p_grant", type_=Boolean)),
        select(asked.c.position, literal(ConsentSubject.TOPIC.value), asked.c.id,
               literal(SubscriptionState.SUBSCRIBED.value)),
    ).subquery("events")
    logged = (
        insert(_events)
        .from_select(
            ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "note",
             "created_at"],
            select(new_contact.c.id, address_hash, events.c.subject, events.c.topic_id,
                   events.c.state, bindparam("p_source", type_=_events.c.source.type),
                   bindparam("p_note", type_=_events.c.note.type), now)
            .select_from(new_contact).join(events, true()).order_by(events.c.position),
        )
        .cte("logged")
    )
    return (
        select(known.c.contact_id, known.c.marked, new_contact.c.id.label("new_contact_id"),
               subscribed.c.id.label("subscription_id"), asked)
        .select_from(known)
        .outerjoin(new_contact, true())
        .outerjoin(asked, true())
        .outerjoin(subscribed, subscribed.c.topic_id == asked.c.id)
        .order_by(asked.c.position)
        .add_cte(logged)
    )


_PROBE_AND_WRITE = _probe_and_write_statement()
_RUN_PROBE_AND_WRITE = DriverStatement(_PROBE_AND_WRITE)


def probe_and_write_new(connection: Connection, contact: dict[str, Any],
                        slugs: list[str] | tuple[str, ...], subscribes: SubscribesAtOnce, *,
                        partner_sharing: bool, source: str, note: str | None,
                        now: dt.datetime) -> tuple[Probe, NewContact | None]:
    """PostgreSQL: probe() the address of `contact` (a value for each of NEW_CONTACT_COLUMNS)
    and, in the same statement, write it whole as write_new() would, every topic subscribed,
    when it is new and `subscribes` says each topic of the slugs subscribes it at once; the
    NewContact is None when nothing was written. An unknown slug raises as probe()'s does,
    with nothing written."""
    wanted = list(dict.fromkeys(slugs))
    rows = _RUN_PROBE_AND_WRITE.rows(connection, {
        **contact, "p_slugs": wanted, "p_count": len(wanted),
        "p_marked_double": subscribes[True, True], "p_marked_single": subscribes[True, False],
        "p_double": subscribes[False, True], "p_single": subscribes[False, False],
        "p_grant": partner_sharing, "p_source": source, "p_note": note, "p_now": now,
    })
    topics = in_order(wanted, (row for row in rows if row.id is not None))
    first = rows[0]
    found = Probe(first.contact_id, bool(first.marked), list(topics.values()))
    if first.new_contact_id is None:
        return found, None
    return found, NewContact(first.new_contact_id, {row.id: row.subscription_id for row in rows
                                                    if row.subscription_id is not None})
