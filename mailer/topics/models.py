"""The topic table."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class Topic(db.Model):
    """A list an address can subscribe to; promotional mail always names one."""

    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    double_opt_in: Mapped[bool] = mapped_column(default=True)
    public: Mapped[bool] = mapped_column(default=False)
    # Shown on the confirmation page once an address confirms (plain text).
    welcome_text: Mapped[str] = mapped_column(Text, server_default="")
    # A promotional template mailed once when an address's subscription to the topic is
    # confirmed (topics.welcome); None: no welcome mail.
    welcome_template: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the topic is retired: no new subscription from then on, by any path; its
    # subscriptions and consent history stay as they were.
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def retired(self) -> bool:
        return self.retired_at is not None
