"""Setting, finding and lifting address-wide marks, by keyed hash only."""

from __future__ import annotations

from sqlalchemy import delete, select

from mailer.consent.models import ConsentEvent, ConsentSource, ConsentSubject
from mailer.extensions import db
from mailer.suppressions.models import Reason, Scope, Suppression
from mailer.webhooks import services as webhooks

# Where each mark applies when no topic is named (../shared/CONSENT.md).
DEFAULT_SCOPE = {
    Reason.BOUNCED: Scope.ALL,
    Reason.COMPLAINED: Scope.PROMOTIONAL,
    Reason.LEFT: Scope.PROMOTIONAL,
    Reason.ERASED: Scope.PROMOTIONAL,
    Reason.BLOCKED: Scope.PROMOTIONAL,
    Reason.QUARANTINED: Scope.PROMOTIONAL,
    Reason.UNSUBSCRIBED: Scope.TOPIC,
}

# Marks that only the address itself lifts, by confirming a double opt-in.
LIFTED_BY_CONFIRMATION = frozenset(
    {Reason.COMPLAINED, Reason.LEFT, Reason.ERASED, Reason.BLOCKED, Reason.QUARANTINED}
)


def suppress(
    address_hash: str,
    reason: Reason,
    *,
    source: ConsentSource,
    topic_id: int | None = None,
    contact_id: int | None = None,
    note: str | None = None,
    announce: bool = True,
) -> Suppression:
    """Mark an address (idempotent) and log the mark as a consent event (`note`: who asked,
    e.g. the console user). A new bounced or complained mark on a contact's address records
    its webhook event, unless `announce` is False (the mark came from a referral mail)."""
    scope = Scope.TOPIC if topic_id is not None else DEFAULT_SCOPE[reason]
    same_topic = (
        Suppression.topic_id.is_(None) if topic_id is None else Suppression.topic_id == topic_id
    )
    existing = db.session.scalar(
        select(Suppression).where(
            Suppression.address_hash == address_hash,
            Suppression.reason == reason,
            Suppression.scope == scope,
            same_topic,
        )
    )
    if existing is not None:
        return existing
    row = Suppression(address_hash=address_hash, reason=reason, scope=scope, topic_id=topic_id)
    db.session.add(row)
    db.session.add(
        ConsentEvent(
            contact_id=contact_id,
            address_hash=address_hash,
            subject=ConsentSubject.ADDRESS if topic_id is None else ConsentSubject.TOPIC,
            topic_id=topic_id,
            state=reason.value,
            source=source,
            note=note,
        )
    )
    db.session.flush()
    if announce:
        webhooks.address_marked(address_hash, reason.value)
    return row


def marks(address_hash: str) -> set[Reason]:
    """The address-wide marks (not topic-scoped) on an address."""
    rows = db.session.scalars(select(Suppression.reason).where(
        Suppression.address_hash == address_hash, Suppression.topic_id.is_(None)))
    return {Reason(reason) for reason in rows}


def suppressions_of(address_hash: str) -> list[Suppression]:
    """Every suppression row of an address, oldest first."""
    return list(
        db.session.scalars(
            select(Suppression)
            .where(Suppression.address_hash == address_hash)
            .order_by(Suppression.id)
        )
    )


def lift(
    address_hash: str, reasons: set[Reason], *, source: ConsentSource, contact_id: int | None
) -> set[Reason]:
    """Remove the given address-wide marks, log each lift, and return those that were there."""
    present = marks(address_hash) & reasons
    if not present:
        return set()
    db.session.execute(
        delete(Suppression).where(
            Suppression.address_hash == address_hash,
            Suppression.topic_id.is_(None),
            Suppression.reason.in_([reason.value for reason in present]),
        )
    )
    for reason in sorted(present):
        db.session.add(
            ConsentEvent(
                contact_id=contact_id,
                address_hash=address_hash,
                subject=ConsentSubject.ADDRESS,
                state=f"{reason.value}_lifted",
                source=source,
            )
        )
    db.session.flush()
    return present
