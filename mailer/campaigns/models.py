"""The campaign table. Its messages are outbox rows carrying its id."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailer.database import UTCDateTime, enum_check, utcnow
from mailer.extensions import db
from mailer.topics.models import Topic


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


UNFINISHED = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING,
              CampaignStatus.PAUSED)


class Campaign(db.Model):
    """A mailing of one template to the subscribers of one topic (narrowed by a segment).

    Fan-out copies the recipients into the outbox in batches by contact id;
    `fanout_cursor` is the last contact id done, so a worker that dies mid-way
    is followed by another that goes on from there, and `fanout_done` says
    every recipient has its row. Counts are aggregates only: no per-person
    tracking is kept.
    """

    __tablename__ = "campaigns"
    __table_args__ = (enum_check("status", CampaignStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    template: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    segment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT)
    send_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fanout_owner: Mapped[str | None] = mapped_column(String(100))
    fanout_lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fanout_cursor: Mapped[int] = mapped_column(Integer, default=0)
    fanout_done: Mapped[bool] = mapped_column(default=False)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    topic: Mapped[Topic] = relationship(lazy="joined")
