"""The worker's per-batch queries cost as much as the batch, not as much as the outbox or topic.

Each test captures the SQL the worker really runs (the claim, the consent gate's subscription
lookup) and asks the database for its plan, on a topic and an outbox large enough for a bad
plan to be chosen if the query allowed it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import insert, text

from mailer import addresses
from mailer.consent import gate
from mailer.consent.gate import Request, Stage
from mailer.consent.models import Subscription
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.delivery import outbox
from mailer.extensions import db
from mailer.messages.models import Category, Message
from tests.sql_events import listening

COUNT = 3_000


@pytest.fixture
def big_topic(make_topic) -> tuple[int, list[str]]:
    """COUNT contacts subscribed to one topic, each with a queued promotional message."""
    topic = make_topic("big", double_opt_in=False)
    now = utcnow()
    emails = [f"reader{i}@example.org" for i in range(COUNT)]
    hashes = [addresses.keyed_hash(e) for e in emails]
    db.session.execute(insert(Contact.__table__), [
        {"email": e, "address_hash": h, "attributes": {}, "partner_sharing": False,
         "created_at": now, "updated_at": now} for e, h in zip(emails, hashes, strict=True)])
    ids = [row[0] for row in db.session.execute(text("SELECT id FROM contacts ORDER BY id"))]
    db.session.execute(insert(Subscription.__table__), [
        {"contact_id": i, "topic_id": topic.id, "state": "subscribed", "created_at": now,
         "updated_at": now} for i in ids])
    db.session.execute(insert(Message.__table__), [
        {"public_id": f"{n:032x}", "category": "promotional", "topic_id": topic.id,
         "template": "newsletter", "data": {}, "to_address": e, "address_hash": h,
         "status": "queued", "attempts": 0, "due_at": now - dt.timedelta(seconds=n),
         "created_at": now, "updated_at": now}
        for n, (e, h) in enumerate(zip(emails, hashes, strict=True))])
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # as autovacuum would have by now
    return topic.id, hashes


@contextmanager
def captured(prefix: str) -> Iterator[list[tuple[str, object]]]:
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(prefix):
            statements.append((statement, parameters))

    with listening(keep):
        yield statements


def plan(statement: str, parameters: object, *, no_seqscan: bool = False) -> str:
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        if no_seqscan:  # a few thousand rows are read fastest whole: ask what else it could do
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
    else:
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
    text_plan = "\n".join(" ".join(str(v) for v in row) for row in rows)
    db.session.rollback()
    return text_plan


def test_the_gate_looks_subscriptions_up_by_contact_not_by_topic(big_topic):
    topic_id, hashes = big_topic
    requests = [Request(h, Category.PROMOTIONAL, topic_id) for h in hashes[:200]]
    with captured("SELECT") as statements:
        decisions = gate.check_many(requests, stage=Stage.DELIVERY)
    assert all(d.allowed for d in decisions)
    lookups = [s for s in statements if "subscriptions" in s[0]]
    assert lookups, statements
    for statement, parameters in lookups:
        shown = plan(statement, parameters, no_seqscan=True)
        assert "ix_subscriptions_topic_state" not in shown, shown
        assert ("uq_subscriptions_contact_id_topic_id" in shown  # PostgreSQL
                or "sqlite_autoindex_subscriptions_1 (contact_id=?)" in shown), shown


def test_the_claim_walks_the_claimable_index_and_sorts_nothing(big_topic):
    with captured("UPDATE MESSAGES SET STATUS") as statements:
        claimed = outbox.claim("plan-test", 200, 30)
    assert len(claimed) == 200
    (statement, parameters), = statements
    shown = plan(statement, parameters)
    assert "ix_messages_claimable" in shown, shown
    assert "Sort" not in shown and "TEMP B-TREE" not in shown.upper(), shown


def test_the_lease_renewal_finds_the_held_rows_by_primary_key(big_topic):
    claimed = outbox.claim("plan-test", 200, 30)
    with captured("UPDATE MESSAGES SET DUE_AT") as statements:
        assert outbox.renew("plan-test", 30, [c.id for c in claimed]) == 200
    (statement, parameters), = statements
    shown = plan(statement, parameters)
    # Not a scan of the outbox by owner, whose cost would grow with every row ever sent.
    assert "pk_messages" in shown or "INTEGER PRIMARY KEY" in shown, shown
    assert "Seq Scan" not in shown and "SCAN messages" not in shown, shown
