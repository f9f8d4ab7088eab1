"""Core statements compiled once and run on the driver's own cursor, for the hottest requests.

A statement run through `Connection.execute()` costs SQLAlchemy about twice what SQLite spends
running it: the cache key, an execution context, the result object and its rows. A
DriverStatement keeps what makes a statement mean the same in both ways: the SQL its dialect
compiles, the bound values put through their types' bind processors (a timestamp's UTC
conversion, JSON), the rows' values through their result processors, the driver's errors
handled as SQLAlchemy handles them (raised as its own; a lost connection invalidated), and the
engine's before_ and after_cursor_execute events (with no execution context). It runs in the
connection's transaction as any statement of it.

What it leaves out: the engine's echo log, the other execution events, the compiled cache,
columns' Python-side defaults and onupdates (a statement that leaves one to them is refused:
give it a value) and expanding parameters (a list is a JSON array: see `contacts.creating`).
Keep it for the few statements where the difference shows.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import Executable

_REQUIRED = object()


@dataclass(frozen=True)
class _Bind:
    key: str  # the name the caller's parameters use
    fixed: Any  # the statement's own value (a literal), or _REQUIRED
    processor: Any  # the type's bind processor, or None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[_Bind, ...]
    positional: bool
    names: tuple[str, ...]  # the rendered names, for a driver of named parameters
    result_processors: tuple[Any, ...]
    row: Any  # a namedtuple class of the rows' columns


class DriverStatement:
    """A Core statement (a SELECT, or an INSERT or UPDATE with RETURNING or without) to run
    on a Connection's driver cursor; compiled once for each dialect it meets."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[int, tuple[Dialect, _Compiled]] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        held = self._compiled.get(id(dialect))
        if held is not None and held[0] is dialect:
            return held[1]
        compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        defaulted = [*compiled.insert_prefetch, *compiled.update_prefetch]
        if defaulted:
            # Connection.execute() computes these in Python; here they would be NULL.
            raise ValueError(f"columns with Python-side defaults left to the statement: "
                             f"{', '.join(column.key for column in defaulted)}; give them "
                             f"values")
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        positional = compiled.positiontup is not None
        names = tuple(compiled.positiontup if positional else by_name)
        binds = []
        for name in names:
            bind = by_name[name]
            if bind.expanding:
                raise ValueError(f"expanding parameter {bind.key!r}: pass a JSON array")
            fixed = _REQUIRED if bind.required or bind.callable else bind.effective_value
            binds.append(_Bind(bind.key, fixed,
                               bind.type.dialect_impl(dialect).bind_processor(dialect)))
        columns = getattr(self.statement, "exported_columns", ())
        ready = _Compiled(
            sql=compiled.string, binds=tuple(binds), positional=positional, names=names,
            row=namedtuple("Row", [column.key for column in columns], rename=True),  # type: ignore[misc]
            result_processors=tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns),
        )
        self._compiled[id(dialect)] = (dialect, ready)
        return ready

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement once; its rows (none when it returns none), values processed,
        as named tuples (`row.id`, `row._asdict()`)."""
        compiled = self._for(connection.dialect)
        fetched = self._run(connection, compiled, self._values(compiled, params), many=False)
        return [self._processed(compiled, row) for row in fetched]

    def run_many(self, connection: Connection, many: Iterable[Mapping[str, Any]]) -> None:
        """Run the statement once for each set of parameters (it must return no rows)."""
        compiled = self._for(connection.dialect)
        values = [self._values(compiled, params) for params in many]
        if values:
            self._run(connection, compiled, values, many=True)

    def _run(self, connection: Connection, compiled: _Compiled, values: Any, *,
             many: bool) -> list[Any]:
        cursor = self._cursor(connection)
        sql = compiled.sql
        try:
            # The engine's statement events, as Connection.execute() fires them (with no
            # execution context): what watches the SQL sent sees these statements too.
            for listener in connection.dispatch.before_cursor_execute:
                sql, values = listener(connection, cursor, sql, values, None, many)
            if many:
                cursor.executemany(sql, values)
            else:
                cursor.execute(sql, values)
            for listener in connection.dispatch.after_cursor_execute:
                listener(connection, cursor, sql, values, None, many)
            return cursor.fetchall() if cursor.description is not None else []
        except connection.dialect.loaded_dbapi.Error as exc:
            # SQLAlchemy's own handling of a driver's error, as Connection.execute() and its
            # own cursor executions (column defaults, sequences) use it: the error raised as
            # SQLAlchemy's, the handle_error events, and on a lost connection that connection
            # and those of the pool older than it invalidated (mailer.autocommit retries on
            # a new one then).
            connection._handle_dbapi_exception(exc, sql, values, cursor, None)
        finally:
            cursor.close()

    @staticmethod
    def _cursor(connection: Connection) -> Any:
        # As Connection.execute() would: without a transaction begun, its commit() would
        # commit nothing, and the pool would roll the statement back.
        if not connection.in_transaction():
            connection.begin()
        return connection.connection.cursor()

    @staticmethod
    def _values(compiled: _Compiled, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = []
        for bind in compiled.binds:
            value = params[bind.key] if bind.fixed is _REQUIRED else params.get(bind.key,
                                                                                 bind.fixed)
            values.append(bind.processor(value) if bind.processor is not None else value)
        if compiled.positional:
            return tuple(values)
        return dict(zip(compiled.names, values, strict=True))

    @staticmethod
    def _processed(compiled: _Compiled, row: Sequence[Any]) -> Any:
        # A NULL stays None, as every type of this project reads it.
        return compiled.row._make(
            value if processor is None or value is None else processor(value)
            for processor, value in zip(compiled.result_processors, row, strict=True))
