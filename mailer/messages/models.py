"""The outbox: one row per accepted mail, and the idempotency records of the send API."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, enum_check, utcnow
from mailer.extensions import db


class Category(enum.StrEnum):
    """The kinds of mail (../shared/CONSENT.md); the outbox records each mail's kind."""

    TRANSACTIONAL = "transactional"
    PROMOTIONAL = "promotional"
    CONFIRMATION = "confirmation"
    REFERRAL = "referral"
    NOTICE = "notice"  # a service notice (notices.services), one per contact and policy version


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


# Rows a worker may claim: waiting ones whose time has come, and held ones whose
# lease ran out (their worker died).
CLAIMABLE = (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING)
FINAL = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED,
         MessageStatus.CANCELLED)


def _bytes_ordered(length: int) -> String:
    """A hex key compared as bytes on PostgreSQL (migration 0009: the database's collation
    costs strcoll() in every index step of a fan-out); SQLite compares bytes already."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class Message(db.Model):
    """An accepted mail and its delivery state.

    `due_at` is when the row may next be claimed: the next attempt for a queued
    or deferred row, the lease expiry for a row being sent, NULL once final.
    """

    __tablename__ = "messages"
    __table_args__ = (
        enum_check("status", MessageStatus),
        enum_check("category", Category),
        # A campaign reaches each address at most once: a database fact, whatever
        # restarts, resumes or extra workers happen. Address first, so the same index
        # also finds every row of an address (erasure's scrub, bounce matching, the
        # gate's confirmation count): a separate address index would be a second
        # random-key B-tree for every inserted row to update (see migration 0006).
        UniqueConstraint("address_hash", "campaign_id"),
        # The claim query reads only claimable rows; a partial index keeps it
        # small however many sent rows pile up.
        Index(
            "ix_messages_claimable",
            "due_at",
            postgresql_where=text("status IN ('queued', 'deferred', 'sending')"),
            sqlite_where=text("status IN ('queued', 'deferred', 'sending')"),
        ),
        # A notice's progress reads its rows; partial, so campaign rows (NULL) cost no entry.
        Index("ix_messages_notice_id", "notice_id",
              postgresql_where=text("notice_id IS NOT NULL"),
              sqlite_where=text("notice_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(_bytes_ordered(32), unique=True)
    category: Mapped[str] = mapped_column(String(16))
    # No foreign key on topic_id and campaign_id (migration 0006): PostgreSQL checks a foreign
    # key with a query per inserted row, which made a third of a campaign's fan-out. Both are
    # right by construction: accept reads the topic in the transaction that queues the mail,
    # fan-out holds its campaign's row locked while it inserts (and campaigns.topic_id is a
    # foreign key); the app deletes neither topics nor campaigns (campaigns are cancelled).
    topic_id: Mapped[int | None] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Plaintext recipient: scrubbed (set NULL) on erasure and, for referrals, once sent.
    to_address: Mapped[str | None] = mapped_column(String(254))
    address_hash: Mapped[str] = mapped_column(_bytes_ordered(64))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # Indexed for a campaign's stats, cancel and finish; one key per campaign, so appending a
    # fan-out's rows to it is cheap.
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    # The notice (notices.models.Notice) that queued the row; no foreign key, as campaign_id.
    notice_id: Mapped[int | None] = mapped_column(Integer)
    # A campaign's test mail (rendered as the campaign's promotional mail, see compose).
    is_test: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(db.Model):
    """The first answer to a send made with an Idempotency-Key, replayed for repeats.

    Only a SHA-256 of the request is kept, and the answer (ids and statuses), so
    no record holds an address.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class TemplateCategory(enum.StrEnum):
    """The kind of mail a template is, as its template.toml or console form declares it."""

    TRANSACTIONAL = "transactional"
    PROMOTIONAL = "promotional"
    NOTICE = "notice"


class BodyFormat(enum.StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


class ConsoleTemplate(db.Model):
    """One version of a template written in the console; editing adds the next version.

    Rows are never changed: a campaign or queued mail names the version it was made with
    (the reference "name@version"), so what it sends is what was previewed. `body_html` is
    the body as sent (Markdown made HTML, then sanitized; Jinja in it as written) and
    `body_text` the text part (written by hand, or made from the body).
    """

    __tablename__ = "console_templates"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        enum_check("category", TemplateCategory),
        enum_check("body_format", BodyFormat),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text)
    body_format: Mapped[str] = mapped_column(String(8))
    body_source: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    # NULL: the text part is made from the body.
    text_source: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    # [{"name", "label", "example"}], in the form's order.
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("admin_users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
