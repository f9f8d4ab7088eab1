"""Setting, finding and lifting address-wide marks, by keyed hash only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, exists, select

from mailer.consent.models import ConsentEvent, ConsentSource, ConsentSubject
from mailer.extensions import autoflush, db
from mailer.suppressions.models import Reason, Scope, Suppression

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
) -> Suppression:
    """Mark an address (idempotent) and log the mark as a consent event (`note`: who asked,
    e.g. the console user)."""
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
    return row


_table = Suppression.__table__
# Built once: a plain Core select of one column is read on every subscription request, and
# building and keying the statement again each time cost more than running it.
_MARKS = select(_table.c.reason).where(
    _table.c.address_hash == bindparam("address_hash"), _table.c.topic_id.is_(None)
)


def is_marked(address_hash: Any) -> ColumnElement[bool]:
    """SQL for "the address has an address-wide mark" (marks() would not be empty), to read it
    in the same statement as something else; `address_hash` a value or a bindparam."""
    return exists().where(_table.c.address_hash == address_hash, _table.c.topic_id.is_(None))


def marks(address_hash: str) -> set[Reason]:
    """The address-wide marks (not topic-scoped) on an address."""
    autoflush()  # marks added but not flushed yet count, as they did for the ORM query
    rows = db.session.scalars(_MARKS, {"address_hash": address_hash})
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
