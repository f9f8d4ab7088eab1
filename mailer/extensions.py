"""Flask extensions, created unbound; `create_app()` binds them with init_app().

Importing this module opens no connection and reads no setting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

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
from sqlalchemy.orm import DeclarativeBase, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, instance_state

# Stable constraint names, so Alembic migrations (and SQLite batch mode) can
# address every constraint by name on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


M = TypeVar("M")


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


# Every engine (binds too) hides bound values from its errors: a database error's message,
# logged and perhaps shown to an operator, then holds no address or token.
db = SQLAlchemy(model_class=Base, engine_options={"hide_parameters": True})
migrate = Migrate()
api = MailerApi()
csrf = CSRFProtect()
# Limits key on the client address in memory (or Redis, with an expiry), never in the
# database: no IP address is ever stored next to a person (CONSENT.md).
limiter = MailerLimiter(get_remote_address, default_limits=[], headers_enabled=True)
# The console's logins (mailer.admin sets the user loader and where to send strangers).
login_manager = LoginManager()


def commit_and_keep() -> None:
    """Commit the request's session without expiring what it holds.

    For a view that answers with objects it has just written: their loaded state is what was
    committed, so re-reading each one (a SELECT per object, and its relationships lazily)
    to serialize the response would only repeat it. The session's default stays
    `expire_on_commit=True`: long-lived sessions (the worker, the scheduler) keep seeing
    other processes' changes after each commit.
    """
    session = db.session()
    if not session.in_transaction():
        return  # nothing was read or written through the session: nothing to commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


@contextmanager
def single_write_request(enabled: bool = True) -> Iterator[None]:
    """On PostgreSQL, run the statements of the block in autocommit: for a request that
    writes one statement, after its reads, and commits the session at the end of the block.

    PostgreSQL's default isolation (READ COMMITTED) gives each statement its own snapshot
    inside a transaction too, and one statement is atomic alone, so such a request means
    the same without a transaction, and spares the round trips of BEGIN and COMMIT (two of
    a send's five). Nothing changes on SQLite (no round trips), when `enabled` is false,
    or when the session has begun already. A block left by an exception ends the session's
    transaction, so the connection goes back to the pool and no later statement of the
    session finds itself outside a transaction.
    """
    session = db.session()
    if not enabled or db.engine.dialect.name != "postgresql" or session.in_transaction():
        yield
        return
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        yield
    except BaseException:
        session.rollback()
        raise


def autoflush() -> None:
    """Flush what is pending, as an ORM query does before it reads and a Core statement does
    not; nothing under `no_autoflush`, and next to nothing when nothing is pending."""
    session = db.session()
    if session.autoflush:
        session.flush()


def attach_inserted(model: type[M], row: Mapping[str, Any]) -> M:
    """The session's persistent object of a row just written with a Core INSERT, as a flush
    would have left it, without reading the row back. `row` holds every column of `model`,
    primary key included (a column left out would be loaded by a SELECT when read).

    Core writes skip the ORM's unit of work, which costs several times the INSERT itself on
    the hot paths (a new contact, its subscription, an accepted mail). The object is built as
    the ORM builds one it loads, its state filled in directly: the model's constructor would
    record every value as a change (history, events) only for it to be committed at once.
    """
    session = db.session()
    instance = _detached(model, row)
    stale = session.identity_map.get(instance_state(instance).key)
    if stale is not None:
        # The object of a row rolled back earlier (SQLite hands its id out again): the row
        # with this key is ours now.
        session.expunge(stale)
    session.add(instance)
    return instance


def attach_loaded(model: type[M], row: Mapping[str, Any]) -> M:
    """The session's object of a row read with a Core statement (every column of `model`, and
    perhaps more, which is left out): the one the session holds for its key already, as an
    ORM query would answer, or a new persistent one, filled as attach_inserted() fills it."""
    session = db.session()
    mapper = class_mapper(model)
    key = mapper.identity_key_from_primary_key(
        tuple(row[column.key] for column in mapper.primary_key))
    held = session.identity_map.get(key)
    if held is not None:
        return held  # type: ignore[no-any-return]
    instance = _detached(model, _column_values(model, row))
    session.add(instance)
    return instance


def copy_of_row(model: type[M], row: Mapping[str, Any]) -> M:
    """An object of `model` holding the row's values of its columns (`row` may hold more), in
    no session: to answer with what was just written or read, a third of attaching it costs.
    It loads nothing, and nothing done to it is written."""
    instance = class_mapper(model).class_manager.new_instance()
    instance_dict(instance).update(_column_values(model, row))
    return instance  # type: ignore[no-any-return]


def _column_values(model: type[Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's value of each column attribute of `model`, by attribute name."""
    return {attribute.key: row[attribute.columns[0].key]
            for attribute in class_mapper(model).column_attrs}


def _detached(model: type[M], row: Mapping[str, Any]) -> M:
    instance = class_mapper(model).class_manager.new_instance()
    instance_dict(instance).update(row)
    make_transient_to_detached(instance)
    return instance  # type: ignore[no-any-return]
