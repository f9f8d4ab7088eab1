"""The API key table."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class ApiKey(db.Model):
    """A calling service's key: only its SHA-256 is kept, the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Written at most once a minute per key and process (see services.authenticate).
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
