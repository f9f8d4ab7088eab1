"""The notices sent, and the deliveries that keep each policy version to one mail an address."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class Notice(db.Model):
    """One posting of a notice template for a policy version. Its mail are outbox rows
    carrying its id (`messages.notice_id`); `recipients` counts the addresses it queued,
    which leaves out those a posting of the same version reached before."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    template: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_version: Mapped[str] = mapped_column(String(100))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    # "api key N" or a console user's address: who posted it (no recipient is named here).
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class NoticeDelivery(db.Model):
    """An address was sent a policy version (by the notice `notice_id`). The unique
    (policy_version, address_hash) makes "each contact at most once per version" a database
    fact: however often, or however concurrently, a version is posted, a second row for the
    same address cannot be stored, so no second mail is queued."""

    __tablename__ = "notice_deliveries"
    __table_args__ = (UniqueConstraint("policy_version", "address_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_version: Mapped[str] = mapped_column(String(100))
    address_hash: Mapped[str] = mapped_column(String(64))
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"),
                                           index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
