"""The day's audience reports, kept so that every request of a day answers the same counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Date, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class AudienceReport(db.Model):
    """One computed report (its answer, counts only) for one UTC day, grouping and k.

    A report is computed at most once a day for a grouping: asking again, from the API or the
    console, from any process, gets the stored answer, so counts cannot be watched change
    contact by contact (see mailer.reports.services). Older days are deleted when a new day's
    report is stored.
    """

    __tablename__ = "audience_reports"
    __table_args__ = (UniqueConstraint("day", "dimensions", "min_group"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date)
    # The grouping as the API names it, e.g. "topic,attribute:country".
    dimensions: Mapped[str] = mapped_column(String(200))
    min_group: Mapped[int] = mapped_column()
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
