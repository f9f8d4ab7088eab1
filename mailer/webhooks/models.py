"""Webhook endpoints and the event outbox (one row per event and endpoint)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class EventType(enum.StrEnum):
    MESSAGE_SENT = "message.sent"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_SUPPRESSED = "message.suppressed"
    CONTACT_SUBSCRIBED = "contact.subscribed"
    CONTACT_UNSUBSCRIBED = "contact.unsubscribed"
    CONTACT_BOUNCED = "contact.bounced"
    CONTACT_COMPLAINED = "contact.complained"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"      # waiting for its first or next attempt (or leased by a worker)
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"        # no 2xx within the retry window


class WebhookEndpoint(db.Model):
    """A URL that receives the events it names, signed with its secret.

    The secret is kept as it is, not hashed: the worker needs it to sign every request
    (a hash cannot sign). It is shown once, at creation or rotation, and never again. After
    a rotation the previous secret also signs until `previous_secret_until`.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):
    """One event for one endpoint: its body until delivered, then only the outcome.

    `order_key` (the address hash of the contact the event is about) keeps events about one
    contact in order per endpoint: a row is not claimed while an older row with the same
    endpoint and key is still pending.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "due_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "order_key", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    order_key: Mapped[str | None] = mapped_column(String(64))
    # The JSON body as sent, byte for byte the same on every attempt; None once final.
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def describe(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "type": self.event_type, "status": self.status,
                "attempts": self.attempts, "last_error": self.last_error}
