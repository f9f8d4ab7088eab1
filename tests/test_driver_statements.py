"""DriverStatement runs a Core statement on the driver's cursor and means what
Connection.execute() would: the same values stored, the same values read back, the same
errors, in the connection's transaction. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, func, insert, literal, select
from sqlalchemy.exc import IntegrityError

from mailer.driver_statements import DriverStatement
from mailer.extensions import db
from mailer.topics.models import Topic

_topics = Topic.__table__
WHEN = dt.datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=dt.timezone(dt.timedelta(hours=2)))

INSERT_TOPIC = insert(_topics).values(
    slug=bindparam("slug"), name=bindparam("name"), description=literal("fixed text"),
    double_opt_in=bindparam("double_opt_in"), public=bindparam("public"),
    created_at=bindparam("created_at"),
).returning(_topics.c.id, _topics.c.created_at, _topics.c.double_opt_in)
RUN_INSERT_TOPIC = DriverStatement(INSERT_TOPIC)
RUN_READ_TOPIC = DriverStatement(select(_topics).where(_topics.c.slug == bindparam("slug")))


def topic_values(slug: str) -> dict[str, object]:
    return {"slug": slug, "name": slug.title(), "double_opt_in": True, "public": False,
            "created_at": WHEN}


def test_values_go_through_their_types_both_ways_as_with_execute():
    with db.engine.connect() as connection:
        (inserted,) = RUN_INSERT_TOPIC.rows(connection, topic_values("driver"))
        executed = connection.execute(INSERT_TOPIC, topic_values("core")).one()
        # The timestamp went in as UTC and comes back aware; the boolean is a bool.
        assert inserted.created_at == WHEN and inserted.created_at.tzinfo is dt.UTC
        assert inserted.double_opt_in is True
        assert (inserted.created_at, inserted.double_opt_in) == (executed.created_at,
                                                                 executed.double_opt_in)
        stored = {row.slug: row for row in connection.execute(select(_topics))}
        (read,) = RUN_READ_TOPIC.rows(connection, {"slug": "driver"})
    assert stored["driver"].created_at == stored["core"].created_at
    assert stored["driver"].description == "fixed text"  # the statement's own literal
    assert read._asdict() == stored["driver"]._asdict()


def test_it_runs_in_the_connections_transaction():
    with db.engine.connect() as connection:
        RUN_INSERT_TOPIC.rows(connection, topic_values("undone"))
        connection.rollback()
        RUN_INSERT_TOPIC.rows(connection, topic_values("kept"))  # begins a transaction anew
        connection.commit()
    with db.engine.connect() as connection:
        slugs = connection.scalars(select(_topics.c.slug)).all()
    assert slugs == ["kept"]


def test_the_drivers_errors_are_sqlalchemys():
    with db.engine.connect() as connection:
        RUN_INSERT_TOPIC.rows(connection, topic_values("twice"))
        with pytest.raises(IntegrityError):
            RUN_INSERT_TOPIC.rows(connection, topic_values("twice"))


def test_run_many_writes_each_and_a_missing_value_is_refused():
    plain = DriverStatement(insert(_topics).values(
        slug=bindparam("slug"), name=bindparam("name"), double_opt_in=bindparam("double_opt_in"),
        public=bindparam("public"), description=literal(""), created_at=bindparam("created_at")))
    with db.engine.connect() as connection:
        plain.run_many(connection, [topic_values("a"), topic_values("b")])
        plain.run_many(connection, [])
        with pytest.raises(KeyError):
            plain.rows(connection, {"slug": "c"})
        assert connection.scalar(select(func.count()).select_from(_topics)) == 2


def test_an_expanding_parameter_is_refused():
    listed = DriverStatement(select(_topics.c.id).where(
        _topics.c.slug.in_(bindparam("slugs", expanding=True))))
    with db.engine.connect() as connection, pytest.raises(ValueError, match="JSON array"):
        listed.rows(connection, {"slugs": ["a"]})


def test_a_column_left_to_its_python_default_is_refused():
    """Connection.execute() would compute it; the driver would store NULL."""
    without_created_at = DriverStatement(insert(_topics).values(
        slug=bindparam("slug"), name=bindparam("name"), description=literal(""),
        double_opt_in=bindparam("double_opt_in"), public=bindparam("public")))
    with db.engine.connect() as connection, pytest.raises(ValueError, match="created_at"):
        without_created_at.rows(connection, topic_values("a"))
