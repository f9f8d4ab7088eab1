"""Column types and connection settings shared by every model, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
import sqlite3
import time
from typing import Any

from sqlalchemy import CheckConstraint, Connection, DateTime, Engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator


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
    # WAL lets readers read beside the one writer; the busy timeout makes a writer wait for
    # the one before it instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Erasure must leave no plaintext behind in free pages (see contacts.erasure).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_savepoint(connection: Connection, _name: str) -> None:
    # The driver begins a transaction only before INSERT, UPDATE, DELETE or REPLACE. A
    # SAVEPOINT outside one would open a deferred transaction of its own, which RELEASE then
    # commits: open the write transaction first, so the savepoint nests inside it.
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def configure_engine(engine: Engine) -> None:
    """Apply the per-connection settings SQLite needs (see `engine_options`); nothing on
    other databases."""
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "savepoint", _sqlite_savepoint)


def engine_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """SQLAlchemy engine options for a database URL: on SQLite, write transactions begin with
    BEGIN IMMEDIATE and reads take no lock.

    How a SQLite transaction begins decides whether several processes can write to one file.
    SQLAlchemy's pysqlite documentation offers a `begin` event that emits BEGIN itself, so
    every statement, reads included, runs in one serializable transaction. Here that is the
    wrong trade: a transaction begun with a plain (deferred) BEGIN that reads, and then
    writes after another process has committed, fails at once with "database is locked"
    (its snapshot is stale; waiting cannot help); and a transaction begun with BEGIN
    IMMEDIATE holds the write lock from its first read, so every read-only request would
    queue behind the writers, or each caller would have to say beforehand whether it
    will write.

    So the driver keeps its own transaction control with `isolation_level="IMMEDIATE"`: it
    emits BEGIN IMMEDIATE right before the first INSERT, UPDATE, DELETE or REPLACE of a
    transaction, which waits (up to the busy timeout) for the writer before it, and commits
    on the session's commit. Reads before that first write run outside a transaction and see
    the newest committed data, as each statement does under PostgreSQL's READ COMMITTED, for
    which the code is written anyway (conflicts are settled by unique constraints and
    ON CONFLICT, not by reading first). A savepoint opens the write transaction first (see
    `configure_engine`). A statement that writes must begin with one of those four words
    (no `WITH ... INSERT`), or the driver runs it outside the transaction. SQLite checkpoints
    the write-ahead log itself; the worker's housekeeping empties it now and then
    (`truncate_sqlite_wal`).
    """
    if not url.startswith("sqlite"):
        return options
    connect_args: dict[str, Any] = {"isolation_level": "IMMEDIATE",
                                    "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    # Python 3.12+ names the mode; from 3.16 on it is no longer the default.
    if hasattr(sqlite3, "LEGACY_TRANSACTION_CONTROL"):
        connect_args["autocommit"] = sqlite3.LEGACY_TRANSACTION_CONTROL
    return {**options, "connect_args": {**connect_args, **options.get("connect_args", {})}}


def truncate_sqlite_wal(engine: Engine, wait_seconds: float = 1.0) -> bool:
    """Copy SQLite's write-ahead log into the main file and empty it; call after a commit
    that removed plaintext (an erasure, a referral recipient's scrub), and now and then to
    keep the log short.

    With `secure_delete` on, the main file keeps no copy of a deleted or overwritten row,
    but the log keeps the older versions of the pages until it starts over. Waits at most
    `wait_seconds` for readers of older snapshots and other connections' checkpoints;
    returns False when they held it up (try again later), True when the log is empty, and
    always True on other databases.
    """
    if engine.dialect.name != "sqlite":
        return True
    deadline = time.monotonic() + wait_seconds
    # The driver's own connection, outside any transaction (a checkpoint cannot run in one).
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    try:
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            connection.execute(f"PRAGMA busy_timeout={int(remaining * 1000)}")
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy == 0 or time.monotonic() >= deadline:
                break
            # Another connection's checkpoint (SQLite's automatic one, run by the commit
            # that took the log past 1,000 pages) holds the checkpoint lock, for which
            # SQLite answers busy at once instead of waiting: try again in a moment.
            time.sleep(0.005)
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        pooled.close()  # back to the pool
    return busy == 0


def insert_of_dialect(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of `entity` in the dialect of the session's database, for its
    `on_conflict_do_nothing()` (PostgreSQL and SQLite spell it alike; plain `insert()` has
    none)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(entity)


def enum_check(column: str, enum_class: type[enum.StrEnum]) -> CheckConstraint:
    """A CHECK constraint (named after the column) keeping `column` within the enum's values."""
    values = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({values})", name=column)
