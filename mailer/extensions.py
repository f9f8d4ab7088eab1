"""Flask extensions, created unbound; `create_app()` binds them with init_app().

Importing this module opens no connection and reads no setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names, so Alembic migrations (and SQLite batch mode) can
# address every constraint by name on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ErrorEnvelopeSchema(ma.Schema):
    """The one error shape of the API (documentation only; see mailer.errors)."""

    error = ma.fields.Dict(
        metadata={"description": '{"code": str, "message": str, "fields": {name: [messages]}}'}
    )


class MailerApi(Api):
    """flask-smorest's Api whose errors leave through mailer.errors, not its own handler."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def _register_error_handlers(self) -> None:
        # mailer.errors registers one handler for the whole app (API JSON and
        # page HTML alike), so flask-smorest's payload shape never leaks out.
        return None


class MailerLimiter(Limiter):
    """Flask-Limiter, whose check before each request can be skipped whole for requests that
    no limit applies to (see `skip_when`).

    A request filter of Flask-Limiter's own only empties the list of limits: the extension
    still resolves them and evaluates the empty list, about 1/20 of an API send's cost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip_checks: list[Callable[[], bool]] = []

    def skip_when(self, predicate: Callable[[], bool]) -> Callable[[], bool]:
        """Decorate a predicate: when it is true, the check before the request does nothing.
        It must be true only where no limit at all is meant to apply (default, application,
        blueprint or the route's own); meta limits are not configured here, so none is
        passed over."""
        self._skip_checks.append(predicate)
        return predicate

    def _check_request_limit(self, callable_name: str | None = None,
                             in_middleware: bool = True) -> None:
        # Flask-Limiter keeps "enabled" on the extension object, so the last app set up in
        # a process would decide for every app in it (several apps share a test process);
        # the app of the request decides here.
        if not current_app.config.get("RATELIMIT_ENABLED", True):
            return
        self.enabled = True
        if in_middleware and any(skip() for skip in self._skip_checks):
            return
        super()._check_request_limit(callable_name, in_middleware)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = MailerApi()
csrf = CSRFProtect()
# Limits key on the client address in memory (or Redis, with an expiry), never in the
# database: no IP address is ever stored next to a person (CONSENT.md).
limiter = MailerLimiter(get_remote_address, default_limits=[], headers_enabled=True)
# The console's logins (mailer.admin sets the user loader and where to send strangers).
login_manager = LoginManager()
