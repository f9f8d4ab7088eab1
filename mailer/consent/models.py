"""Subscriptions (current state per contact and topic) and consent events (the log of changes)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.database import UTCDateTime, enum_check, utcnow
from mailer.extensions import db

if TYPE_CHECKING:
    from mailer.contacts.models import Contact
    from mailer.topics.models import Topic


class SubscriptionState(enum.StrEnum):
    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"


class ConsentSource(enum.StrEnum):
    """Through which channel a consent change arrived."""

    API = "api"
    WEB_FORM = "web_form"
    IMPORT = "import"
    CONFIRM = "confirm"
    ONE_CLICK = "one_click"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"
    PREFERENCES = "preferences"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    ADMIN = "admin"
    REFERRAL = "referral"
    OPERATOR = "operator"


class ConsentSubject(enum.StrEnum):
    """What a consent event is about."""

    TOPIC = "topic"
    PARTNER_SHARING = "partner_sharing"
    ADDRESS = "address"  # an address-wide mark set or lifted (see suppressions)
    NOTICE = "notice"  # a service notice was queued (state "notified", note its policy version)


class Subscription(db.Model):
    """The current consent of one contact for one topic."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("contact_id", "topic_id"),
        enum_check("state", SubscriptionState),
        # Campaign fan-out reads the subscribers of one topic.
        Index("ix_subscriptions_topic_state", "topic_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="subscriptions")
    topic: Mapped[Topic] = relationship(lazy="joined")


class ConsentEvent(db.Model):
    """One consent change, appended and never updated.

    Erasure deletes the events of the erased contact (they are personal data) and
    leaves one event keyed by the address hash that records the erasure itself.
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        enum_check("source", ConsentSource),
        enum_check("subject", ConsentSubject),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    address_hash: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(32))
    topic_id: Mapped[int | None] = mapped_column(ForeignKey("topics.id", ondelete="SET NULL"))
    # The new state: a SubscriptionState, "granted"/"withdrawn" for partner
    # sharing, or "<mark>" / "<mark>_lifted" for address-wide marks.
    state: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))
    # Where the caller says consent was collected ("checkout", a file name...).
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    topic: Mapped[Topic | None] = relationship(lazy="joined")

