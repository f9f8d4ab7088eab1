"""The console's users: marketers who log in to /admin/ (not subscribers)."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class Role(enum.StrEnum):
    """What a console user may do: an admin everything, a marketer all but the keys to
    the service (console users, API keys, webhooks)."""

    ADMIN = "admin"
    MARKETER = "marketer"


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
    role: Mapped[str] = mapped_column(String(20), default=Role.ADMIN,
                                      server_default=Role.ADMIN.value)
    # Part of every session's user id (see get_id): raising it ends every session of the
    # user at once, server-side, whatever cookies are still around.
    session_version: Mapped[int] = mapped_column(default=1, server_default="1")
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Flask-Login's user protocol.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def get_id(self) -> str:
        """The session's user id: the row's id and its session version ("7.2")."""
        return f"{self.id}.{self.session_version}"
