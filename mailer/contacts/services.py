"""Creating, changing, exporting and erasing contacts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, text

from mailer import addresses
from mailer.consent import services as consent
from mailer.consent.models import ConsentEvent, ConsentSource, SubscriptionState
from mailer.consent.services import RequestKind, SubscriptionOutcome
from mailer.contacts.models import Contact
from mailer.errors import NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages import services as outbox
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from mailer.topics.services import topics_by_slug

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


def find(raw_email: str) -> Contact | None:
    """The contact for an address in any spelling, or None. Invalid addresses raise."""
    try:
        email = addresses.normalize(raw_email)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"email": [str(exc)]}) from exc
    return db.session.scalar(select(Contact).where(Contact.email == email))


def get(raw_email: str) -> Contact:
    """The contact for an address, or NotFound."""
    contact = find(raw_email)
    if contact is None:
        raise NotFound("No contact with that address.", code="contact_not_found")
    return contact


@dataclass
class Upserted:
    contact: Contact
    created: bool
    outcome: SubscriptionOutcome


def upsert(
    email: str,
    *,
    topics: list[str] | tuple[str, ...] = (),
    source: str | None = None,
    partner_sharing: bool | None = None,
    attributes: dict[str, Any] | None = None,
    channel: ConsentSource = ConsentSource.API,
    kind: RequestKind = RequestKind.ASK,
) -> Upserted:
    """Create or update a contact and ask for its subscriptions to `topics`.

    `partner_sharing` True records a grant; False withdraws one; None leaves it.
    New attributes are merged into the existing ones; a null value removes one.
    """
    try:
        normalized = addresses.normalize(email)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"email": [str(exc)]}) from exc
    wanted_topics = list(topics_by_slug(topics).values())
    if attributes is not None:
        check_attributes(attributes)

    contact = db.session.scalar(select(Contact).where(Contact.email == normalized))
    created = contact is None
    if contact is None:
        contact = Contact(
            email=normalized,
            address_hash=addresses.keyed_hash(normalized),
            attributes={},
            source=source,
            partner_sharing=False,
        )
        db.session.add(contact)
        db.session.flush()
    elif source and not contact.source:
        contact.source = source
    if attributes:
        merge_attributes(contact, attributes)
    if partner_sharing is not None:
        consent.set_partner_sharing(contact, partner_sharing, source=channel, note=source)
    outcome = consent.request_subscriptions(
        contact, wanted_topics, source=channel, note=source, kind=kind
    )
    db.session.flush()
    return Upserted(contact=contact, created=created, outcome=outcome)


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
        "consent_history": [
            {
                "at": event.created_at.isoformat(),
                "subject": event.subject,
                "topic": event.topic.slug if event.topic is not None else None,
                "state": event.state,
                "source": event.source,
                "note": event.note,
            }
            for event in consent.history(contact)
        ],
        "suppressions": [
            {
                "reason": row.reason,
                "scope": row.scope,
                "created_at": row.created_at.isoformat(),
            }
            for row in suppressions.suppressions_of(contact.address_hash)
        ],
    }


def erase(contact: Contact, *, source: ConsentSource = ConsentSource.API) -> None:
    """Erase every plaintext trace of the contact; keep its address suppressed by keyed hash.

    The contact, its subscriptions and its consent history go; one consent
    event keyed by hash records the erasure, and the `erased` mark keeps the
    address from ever being marketed to again.
    """
    address_hash = contact.address_hash
    db.session.execute(delete(ConsentEvent).where(ConsentEvent.address_hash == address_hash))
    db.session.delete(contact)
    outbox.scrub_recipient(address_hash)
    db.session.flush()
    suppressions.suppress(address_hash, Reason.ERASED, source=source)
    db.session.flush()


def checkpoint_after_erasure() -> None:
    """Push SQLite's write-ahead log into the main file and empty it.

    With `secure_delete` on, deleted rows are zeroed in the main file, but older
    copies of the pages can linger in the WAL until a checkpoint: truncating it
    leaves no plaintext of an erased address on disk. Call after the commit.
    """
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
