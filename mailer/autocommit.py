"""Work that stands alone on PostgreSQL: run in autocommit, on a pool of its own that skips the
ping, and tried once more on a new connection when the one it got turns out dead.

The session's pool pings every connection it hands out (SQLAlchemy's `pool_pre_ping`): a
round trip before the request's first statement, so that a connection the server has dropped
(a restart, an idle timeout, `pg_terminate_backend`) is replaced before anything runs on it.
For a request whose whole database work is one statement, in autocommit, that ping is half
its round trips. Such work can find a dead connection itself instead: the driver fails at
once on a closed socket, SQLAlchemy then invalidates that connection and every older one of
the pool, and the work runs again on a new one. That holds only for work that means the same
when it runs twice (an upsert, a one-click that finds the address gone already): the first
attempt may have committed before the connection died.

On SQLite there is no server to lose and no round trip: `run_alone()` runs the work in a
transaction of its own on the ordinary engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from mailer.extensions import db

# The Flask-SQLAlchemy bind of the pool without the ping (PostgreSQL only).
BIND_KEY = "autocommit"

T = TypeVar("T")


def bind_options(url: str) -> dict[str, Any]:
    """SQLALCHEMY_BINDS entries for a database URL: the autocommit pool on PostgreSQL, none
    elsewhere. Its connections come on top of the session's (a sync worker holds one)."""
    if not url.startswith("postgresql"):
        return {}
    return {BIND_KEY: {"url": url, "isolation_level": "AUTOCOMMIT", "pool_pre_ping": False}}


def run_alone(work: Callable[[Connection], T]) -> T:
    """Run `work` on a connection of its own and return what it returns.

    PostgreSQL: in autocommit, on the pool that does not ping; when the connection proves
    dead, once more on a new one. `work` must therefore be safe to run twice, and must not
    need a transaction (one statement, or statements each of which stands alone).
    SQLite: in a transaction of its own, committed when `work` returns.
    """
    engine = db.engines.get(BIND_KEY)
    if engine is None:
        with db.engine.begin() as connection:
            return work(connection)
    try:
        with engine.connect() as connection:
            return work(connection)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    # The connection was dead: SQLAlchemy has replaced it (and those older than it).
    with engine.connect() as connection:
        return work(connection)
