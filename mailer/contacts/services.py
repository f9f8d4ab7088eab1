"""Creating, changing, exporting and erasing contacts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, exists, or_, select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from mailer import addresses
from mailer.consent import gate
from mailer.consent import services as consent
from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    SubscriptionState,
)
from mailer.consent.services import RequestKind, SubscriptionOutcome
from mailer.contacts.models import Contact
from mailer.database import (
    SQLITE_BUSY_TIMEOUT_MS,
    insert_of_dialect,
    truncate_sqlite_wal,
    utcnow,
)
from mailer.errors import Conflict, NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages import services as outbox
from mailer.messages.models import Message
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason, Suppression
from mailer.topics.models import Topic
from mailer.topics.services import in_order, topics_by_slug

MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_TEXT = 500


def check_attributes(attributes: Any) -> dict[str, Any]:
    """Return the attributes if they are a small flat object of strings/numbers/booleans/null.

    Raises ValidationFailed naming `attributes` otherwise.
    """
    problems: list[str] = []
    if not isinstance(attributes, dict):
        raise ValidationFailed(fields={"attributes": ["Must be an object."]})
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(f"At most {MAX_ATTRIBUTES} attributes.")
    for name, value in attributes.items():
        if not isinstance(name, str) or not name or len(name) > MAX_ATTRIBUTE_NAME:
            problems.append(f"Attribute names are 1 to {MAX_ATTRIBUTE_NAME} characters.")
        elif isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_TEXT:
                problems.append(f"'{name}': text is at most {MAX_ATTRIBUTE_TEXT} characters.")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"'{name}': numbers must be finite.")
        elif value is not None and not isinstance(value, int | float | bool):
            problems.append(f"'{name}': values are text, numbers, true/false or null.")
    if problems:
        raise ValidationFailed(fields={"attributes": problems})
    return attributes


def _normalize(raw_email: str) -> str:
    try:
        return addresses.normalize(raw_email)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"email": [str(exc)]}) from exc


def find(raw_email: str) -> Contact | None:
    """The contact for an address in any spelling, or None. Invalid addresses raise."""
    email = _normalize(raw_email)
    return db.session.scalar(select(Contact).where(Contact.email == email))


def get(raw_email: str) -> Contact:
    """The contact for an address, or NotFound."""
    contact = find(raw_email)
    if contact is None:
        raise NotFound("No contact with that address.", code="contact_not_found")
    return contact


@dataclass
class Upserted:
    contact: Contact  # with its subscriptions
    created: bool
    outcome: SubscriptionOutcome


# Built once (building and keying a statement costs about as much as SQLite running it).
_LOOKUP = (
    select(Contact)
    .where(Contact.email == bindparam("email"))
    .options(selectinload(Contact.subscriptions))
)


def _lookup(email: str) -> Contact | None:
    """The contact of a normalized address with its subscriptions loaded, or None."""
    return db.session.scalar(_LOOKUP, {"email": email})


def _insert_new(email: str, address_hash: str, *, attributes: dict[str, Any],
                source: str | None, partner_sharing: bool) -> Contact | None:
    """INSERT the contact unless the address exists; None when it does (a concurrent request
    made it after our lookup).

    ON CONFLICT DO NOTHING: the loser of a race for a new address gets no row back and never
    a unique violation; on PostgreSQL it waits for the winner's commit, on SQLite for its
    write lock, and then reads the winner's row as any update would."""
    now = utcnow()
    contact = db.session.scalar(
        insert_of_dialect(db.session, Contact)
        .values(email=email, address_hash=address_hash, attributes=attributes, source=source,
                partner_sharing=partner_sharing, created_at=now, updated_at=now)
        .on_conflict_do_nothing()
        .returning(Contact)
    )
    if contact is not None:
        # A new contact has no subscriptions: say so, rather than have them loaded.
        set_committed_value(contact, "subscriptions", [])
    return contact


def upsert(
    email: str,
    *,
    topics: list[str] | tuple[str, ...] = (),
    source: str | None = None,
    partner_sharing: bool | None = None,
    attributes: dict[str, Any] | None = None,
    channel: ConsentSource = ConsentSource.API,
    kind: RequestKind = RequestKind.ASK,
    email_is_normalized: bool = False,
) -> Upserted:
    """Create or update a contact and ask for its subscriptions to `topics`; flushes, and the
    caller commits.

    `partner_sharing` True records a grant; False withdraws one; None leaves it.
    New attributes are merged into the existing ones; a null value removes one.
    `email_is_normalized`: the caller has already put `email` through
    `addresses.normalize()` (the API's Email field does), so it is not done twice.

    Whether the address may be subscribed without its own confirmation is the consent gate's
    rule (`gate.needs_own_confirmation`), read with the topics asked for.
    """
    normalized = email if email_is_normalized else _normalize(email)
    # The contact's address_hash is this very hash: both come from the normal form.
    address_hash = addresses.keyed_hash(normalized)
    if attributes is not None:
        check_attributes(attributes)  # before anything is written
    wanted_topics, marked = _topics_and_mark(topics, address_hash)
    contact = _lookup(normalized)
    created = False
    for _attempt in range(3):
        if contact is not None:
            break
        contact = _insert_new(normalized, address_hash, attributes=_first_attributes(attributes),
                              source=source, partner_sharing=partner_sharing is True)
        if contact is not None:
            created = True
            if partner_sharing:
                consent.log_partner_sharing(contact, source=channel, note=source)
        else:
            # A concurrent request made the address since our lookup: update its row.
            contact = _lookup(normalized)
    if contact is None:  # made and erased again, three times over, while we tried
        raise Conflict("The contact kept changing during the request; try again.",
                       code="contact_busy")
    if not created:
        if source and not contact.source:
            contact.source = source
        if attributes:
            merge_attributes(contact, attributes)
        if partner_sharing is not None:
            consent.set_partner_sharing(contact, partner_sharing, source=channel, note=source)
    outcome = consent.request_subscriptions(
        contact, wanted_topics, source=channel, note=source, kind=kind, marked=marked
    )
    db.session.flush()
    return Upserted(contact=contact, created=created, outcome=outcome)


def _topics_and_mark(slugs: list[str] | tuple[str, ...],
                     address_hash: str) -> tuple[list[Topic], bool]:
    """The topics of the slugs, in order, and whether the address carries a mark that only
    its own confirmation lifts, in one statement; no topics (and no read) for no slugs. An
    unknown slug raises ValidationFailed naming `topics`."""
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        return [], False
    rows = db.session.execute(
        select(Topic, gate.needs_own_confirmation(address_hash).label("marked"))
        .where(Topic.slug.in_(wanted))
    ).all()
    topics = in_order(wanted, (topic for topic, _marked in rows))
    return list(topics.values()), bool(rows[0].marked)


def _first_attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """A new contact's attributes: merged into nothing, where a null value has nothing to
    remove."""
    return {name: value for name, value in (attributes or {}).items() if value is not None}


def merge_attributes(contact: Contact, changes: dict[str, Any]) -> None:
    """Merge attribute changes into the contact (JSON merge-patch: null removes a key)."""
    merged = dict(contact.attributes or {})
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    check_attributes(merged)
    contact.attributes = merged


def update(
    contact: Contact,
    *,
    attributes: dict[str, Any] | None = None,
    partner_sharing: bool | None = None,
    subscriptions: dict[str, str] | None = None,
    channel: ConsentSource = ConsentSource.API,
) -> SubscriptionOutcome:
    """Apply a PATCH: attribute merge, partner sharing, and per-topic subscribe/unsubscribe."""
    outcome = SubscriptionOutcome()
    changes = subscriptions or {}
    found = topics_by_slug(changes, field="subscriptions")
    if attributes is not None:
        check_attributes(attributes)
        merge_attributes(contact, attributes)
    if partner_sharing is not None:
        consent.set_partner_sharing(contact, partner_sharing, source=channel)
    to_subscribe = [found[s] for s, st in changes.items() if st == SubscriptionState.SUBSCRIBED]
    to_leave = [found[s] for s, st in changes.items() if st == SubscriptionState.UNSUBSCRIBED]
    consent.unsubscribe(contact, to_leave, source=channel)
    if to_subscribe:
        outcome = consent.request_subscriptions(contact, to_subscribe, source=channel)
    db.session.flush()
    return outcome


def _events_of(address_hash: str) -> list[ConsentEvent]:
    """Every consent event keyed by the address hash, oldest first (a contact's own events
    carry its hash too, so this is its whole history)."""
    return list(
        db.session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.address_hash == address_hash)
            .order_by(ConsentEvent.id)
        )
    )


def _messages_of(address_hash: str) -> list[Message]:
    """Every outbox row of the address hash, oldest first."""
    return list(
        db.session.scalars(
            select(Message).where(Message.address_hash == address_hash).order_by(Message.id)
        )
    )


def _held_by_hash(address_hash: str) -> bool:
    """Whether anything at all is kept under the hash: a mark, a consent event or an outbox
    row. One statement; each part is an index lookup."""
    return bool(
        db.session.scalar(
            select(
                or_(
                    exists().where(Suppression.address_hash == address_hash),
                    exists().where(ConsentEvent.address_hash == address_hash),
                    exists().where(Message.address_hash == address_hash),
                )
            )
        )
    )


def _nothing_held() -> NotFound:
    return NotFound("Nothing is held about that address.", code="contact_not_found")


def export(contact: Contact) -> dict[str, Any]:
    """Everything held about the contact's address, consent history and marks included."""
    return {
        "email": contact.email,
        "attributes": contact.attributes or {},
        "source": contact.source,
        "partner_sharing": contact.partner_sharing,
        "created_at": contact.created_at.isoformat(),
        "updated_at": contact.updated_at.isoformat(),
        "subscriptions": {
            s.topic.slug: {
                "state": s.state,
                "created_at": s.created_at.isoformat(),
                "updated_at": s.updated_at.isoformat(),
            }
            for s in contact.subscriptions
        },
        **_held_under_hash(contact.address_hash),
    }


def _held_under_hash(address_hash: str) -> dict[str, Any]:
    """The parts of an export kept by keyed hash: they outlive the contact (or never had one,
    as for a Tell-a-Friend recipient or an address known only from a bounce)."""
    return {
        "consent_history": [
            {
                "at": event.created_at.isoformat(),
                "subject": event.subject,
                "topic": event.topic.slug if event.topic is not None else None,
                "state": event.state,
                "source": event.source,
                "note": event.note,
            }
            for event in _events_of(address_hash)
        ],
        "suppressions": [
            {
                "reason": row.reason,
                "scope": row.scope,
                "created_at": row.created_at.isoformat(),
            }
            for row in suppressions.suppressions_of(address_hash)
        ],
        "messages": [
            {
                "id": message.public_id,
                "category": message.category,
                "template": message.template,
                "status": message.status,
                "created_at": message.created_at.isoformat(),
                "sent_at": message.sent_at.isoformat() if message.sent_at else None,
            }
            for message in _messages_of(address_hash)
        ],
    }


def export_address(raw_email: str) -> dict[str, Any]:
    """All that is held about an address in any spelling: the contact's export when it is a
    contact; otherwise the address and what is kept under its keyed hash (marks, consent
    events, outbox rows), with no contact part. NotFound only when nothing is held at all."""
    email = _normalize(raw_email)
    contact = _lookup(email)
    if contact is not None:
        return export(contact)
    address_hash = addresses.keyed_hash(email)
    if not _held_by_hash(address_hash):
        raise _nothing_held()
    return {"email": email, **_held_under_hash(address_hash)}


def _erase_hash(address_hash: str, source: ConsentSource, contact: Contact | None = None) -> None:
    """The erasure pieces: drop the consent log (its notes may quote the caller) and the
    contact if there is one, scrub the outbox rows, and mark the hash `erased` with one
    event saying so."""
    erased_before = Reason.ERASED in suppressions.marks(address_hash)
    # Events first: they refer to the contact.
    db.session.execute(delete(ConsentEvent).where(ConsentEvent.address_hash == address_hash))
    if contact is not None:
        db.session.delete(contact)
    outbox.scrub_recipient(address_hash)
    db.session.flush()
    suppressions.suppress(address_hash, Reason.ERASED, source=source)
    if erased_before:
        # suppress() found the mark and logged nothing, and the delete above took the
        # earlier record: log this erasure, so the history says the address was erased.
        db.session.add(ConsentEvent(contact_id=None, address_hash=address_hash,
                                    subject=ConsentSubject.ADDRESS, state=Reason.ERASED.value,
                                    source=source))
    db.session.flush()


def erase(contact: Contact, *, source: ConsentSource = ConsentSource.API) -> None:
    """Erase every plaintext trace of the contact; keep its address suppressed by keyed hash.

    The contact, its subscriptions and its consent history go; one consent
    event keyed by hash records the erasure, and the `erased` mark keeps the
    address from ever being marketed to again.
    """
    _erase_hash(contact.address_hash, source, contact)


def erase_address(raw_email: str, *, source: ConsentSource = ConsentSource.API) -> None:
    """Erase an address in any spelling: its contact if it is one (see erase()), else what is
    kept under its keyed hash alone (a Tell-a-Friend recipient, an address known from a
    bounce or a transactional send), which ends marked `erased` all the same. NotFound only
    when nothing is held at all: an erasure request never creates data about an unknown
    address."""
    email = _normalize(raw_email)
    contact = _lookup(email)
    if contact is not None:
        erase(contact, source=source)
        return
    address_hash = addresses.keyed_hash(email)
    if not _held_by_hash(address_hash):
        raise _nothing_held()
    _erase_hash(address_hash, source)


def checkpoint_after_erasure() -> None:
    """Leave no older copy of an erased contact's pages in SQLite's write-ahead log (with
    `secure_delete` on, the main file keeps none). Call after the commit."""
    truncate_sqlite_wal(db.engine, wait_seconds=SQLITE_BUSY_TIMEOUT_MS / 1000)
