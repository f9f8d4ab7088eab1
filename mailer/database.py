"""Column types and connection settings shared by every model, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
import time
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Engine, event
from sqlalchemy.types import TypeDecorator

from mailer import sqlite_writers


def utcnow() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no timezone type and returns naive values; PostgreSQL returns
    aware ones. Both come back as aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web processes read while a worker writes; busy_timeout makes
    # writers wait for each other instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Erasure must leave no plaintext behind in free pages (see contacts.erasure).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def configure_engine(engine: Engine) -> None:
    """Apply per-connection settings the dialect needs (SQLite pragmas, the writer queue)."""
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_on_connect)
    path = engine.url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        writers = sqlite_writers.queue_for(path, SQLITE_BUSY_TIMEOUT_MS / 1000)

        def queue_writers(dbapi_connection: Any, _record: Any) -> None:
            if isinstance(dbapi_connection, sqlite_writers.QueuedConnection):
                dbapi_connection.queue_writers(writers)

        event.listen(engine, "connect", queue_writers)


def engine_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """SQLAlchemy engine options for a database URL: SQLite connections are QueuedConnections
    (mailer.sqlite_writers)."""
    if not url.startswith("sqlite"):
        return options
    connect_args = {**options.get("connect_args", {}),
                    "factory": sqlite_writers.QueuedConnection}
    return {**options, "connect_args": connect_args}


def truncate_sqlite_wal(engine: Engine, wait_seconds: float = 1.0) -> bool:
    """Copy SQLite's write-ahead log into the main file and empty it; call after a commit
    that removed plaintext (an erasure, a referral recipient's scrub).

    With `secure_delete` on, the main file keeps no copy of a deleted or overwritten row,
    but the log keeps the older versions of the pages until it starts over. Waits at most
    `wait_seconds` for readers of older snapshots and other connections' checkpoints;
    returns False when they held it up (try again later), True when the log is empty, and
    always True on other databases.
    """
    if engine.dialect.name != "sqlite":
        return True
    deadline = time.monotonic() + wait_seconds
    with engine.connect() as connection:
        try:
            while True:
                remaining = max(deadline - time.monotonic(), 0.0)
                connection.exec_driver_sql(f"PRAGMA busy_timeout={int(remaining * 1000)}")
                busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").scalar()
                if busy == 0 or time.monotonic() >= deadline:
                    break
                # Another connection's checkpoint (a process's checkpoint thread, see
                # sqlite_writers) holds the checkpoint lock, for which SQLite answers busy at
                # once instead of waiting: try again in a moment.
                time.sleep(0.005)
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return busy == 0


def enum_check(column: str, enum_class: type[enum.StrEnum]) -> CheckConstraint:
    """A CHECK constraint (named after the column) keeping `column` within the enum's values."""
    values = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({values})", name=column)


def epoch_seconds(column: Any, dialect_name: str) -> Any:
    """A SQL expression of a UTCDateTime column as whole seconds since 1970 (UTC), on either
    database (for grouping rows into time buckets in the query)."""
    from sqlalchemy import Integer, cast, func

    if dialect_name == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), Integer)
    return cast(func.strftime("%s", column), Integer)  # SQLite stores UTC without an offset
