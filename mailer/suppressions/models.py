"""The suppression table: marks on an address hash, never the plaintext address."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, enum_check, utcnow
from mailer.extensions import db


class Reason(enum.StrEnum):
    """The marks of ../shared/CONSENT.md."""

    BOUNCED = "bounced"  # hard bounce: undeliverable, refuses every kind of mail
    COMPLAINED = "complained"
    LEFT = "left"  # unsubscribed from everything
    ERASED = "erased"
    BLOCKED = "blocked"  # a referral recipient's "never mail me again"
    QUARANTINED = "quarantined"  # received a referral, has not confirmed a subscription
    UNSUBSCRIBED = "unsubscribed"  # one topic, for an address with no contact row


class Scope(enum.StrEnum):
    ALL = "all"
    PROMOTIONAL = "promotional"
    TOPIC = "topic"


class Suppression(db.Model):
    """A mark on an address, known only by its keyed hash."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("address_hash", "reason", "scope", "topic_id"),
        enum_check("reason", Reason),
        enum_check("scope", Scope),
        CheckConstraint("(scope = 'topic') = (topic_id IS NOT NULL)", name="topic_scope"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    topic_id: Mapped[int | None] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
