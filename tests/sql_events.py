"""Watching the SQL a request sends, on every engine of the app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import event

from mailer.extensions import db


@contextmanager
def listening(keep: Callable[..., None]) -> Iterator[None]:
    """`keep` called before each statement of every engine of the app (today the session's
    alone)."""
    engines = list(db.engines.values())
    for engine in engines:
        event.listen(engine, "before_cursor_execute", keep)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", keep)
