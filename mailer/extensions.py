"""Flask extensions, created unbound; `create_app()` binds them with init_app().

Importing this module opens no connection and reads no setting.
"""

from __future__ import annotations

import marshmallow as ma
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
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


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = MailerApi()
csrf = CSRFProtect()
# Limits key on the client address in memory (or Redis, with an expiry), never in the
# database: no IP address is ever stored next to a person (CONSENT.md).
limiter = Limiter(get_remote_address, default_limits=[], headers_enabled=True)
