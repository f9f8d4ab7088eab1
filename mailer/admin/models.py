"""The console's users: marketers who log in to /admin/ (not subscribers)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class AdminUser(db.Model):
    """A console login: the normalized address and an argon2id hash of the password.

    It carries the four members Flask-Login asks of a user itself rather than
    inheriting UserMixin, whose `__eq__` by id would change how the ORM's objects
    compare.
    """

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Flask-Login's user protocol.
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)
