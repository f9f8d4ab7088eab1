"""Fan-out benchmark: a campaign to 1,000,000 subscribers becomes outbox rows on PostgreSQL.

    .venv/bin/python bench/fanout.py [--subscribers 1000000] [--pg-url URL]

Creates a scratch database, loads the subscribers with COPY (setup, not measured), then times
the real fan-out (mailer.campaigns.fanout.fan_out_batch in batches of scheduler.FANOUT_BATCH,
each batch its own commit, as the worker runs it) and, in the same run, a bare
`INSERT ... SELECT` of the same rows into a copy of the messages table, for comparison.
Goal: <= 10 s for 1,000,000. The figures are printed last.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH = "mailer_bench_fanout"


def admin_url(base: str) -> str:
    return base.rstrip("/") + "/postgres"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    with psycopg.connect(admin_url(args.pg_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        conn.execute(f"CREATE DATABASE {SCRATCH}")
    url = f"{args.pg_url.rstrip('/')}/{SCRATCH}"
    try:
        return run(url, args.subscribers)
    finally:
        with psycopg.connect(admin_url(args.pg_url), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


def run(url: str, count: int) -> int:
    import flask_migrate
    from sqlalchemy import func, select, text

    from config import TestConfig
    from mailer import create_app
    from mailer.campaigns import scheduler, services
    from mailer.campaigns.fanout import fan_out_batch
    from mailer.extensions import db
    from mailer.messages.models import Message
    from mailer.topics.services import create_topic

    config = TestConfig.from_env({})
    config.MAILER_DATABASE_URL = url
    config.MAILER_SECRET_KEYS = ["bench"]
    config.MAILER_FROM = "Shop <news@shop.example>"
    config.MAILER_POSTAL_ADDRESS = "1 High Street"
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
        topic = create_topic("news", "News", "", False, True)
        db.session.commit()
        started = time.perf_counter()
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            with conn.cursor().copy(
                "COPY contacts (email, address_hash, attributes, partner_sharing, created_at,"
                " updated_at) FROM STDIN"
            ) as copy:
                buffer = io.StringIO()
                for i in range(count):
                    buffer.write(f"fan{i}@example.com\t{i:064x}\t{{}}\tf\tnow()\tnow()\n"
                                 .replace("now()", "2026-11-25 00:00:00+00"))
                    if i % 100_000 == 99_999:
                        copy.write(buffer.getvalue())
                        buffer = io.StringIO()
                copy.write(buffer.getvalue())
            conn.execute(
                "INSERT INTO subscriptions (contact_id, topic_id, state, created_at, updated_at) "
                "SELECT id, %s, 'subscribed', now(), now() FROM contacts", (topic.id,))
            conn.execute("ANALYZE")
            conn.commit()
        print(f"setup: {count:,} subscribers in {time.perf_counter() - started:.1f} s",
              flush=True)

        campaign = services.create("Bench", "news", "newsletter",
                                   {"headline": "Hi", "intro": "Hello"}, None)
        services.schedule(campaign, None)
        db.session.commit()
        started = time.perf_counter()
        batches = 0
        while True:
            batches += 1
            done = fan_out_batch(campaign, scheduler.FANOUT_BATCH)
            db.session.commit()
            if done:
                break
        fanout_seconds = time.perf_counter() - started
        queued = db.session.scalar(select(func.count()).select_from(Message)
                                   .where(Message.campaign_id == campaign.id))

        db.session.execute(text("CREATE TABLE bare (LIKE messages INCLUDING ALL)"))
        db.session.commit()
        started = time.perf_counter()
        db.session.execute(text(
            "INSERT INTO bare (public_id, category, topic_id, template, data, to_address, "
            "address_hash, status, attempts, due_at, campaign_id, created_at, updated_at) "
            "SELECT md5(c.id::text), 'promotional', s.topic_id, 'newsletter', '{}', c.email, "
            "c.address_hash, 'queued', 0, now(), NULL, now(), now() "
            "FROM contacts c JOIN subscriptions s ON s.contact_id = c.id "
            "WHERE s.state = 'subscribed'"))
        db.session.commit()
        bare_seconds = time.perf_counter() - started
        db.engine.dispose()

    print(f"fan-out: {queued:,} messages queued in {batches} batches")
    print(f"bare INSERT ... SELECT: {bare_seconds:.2f} s")
    print(f"fan-out: {fanout_seconds:.2f} s (goal <= 10 s); ratio fan-out/bare "
          f"{fanout_seconds / bare_seconds:.2f}")
    return 0 if queued == count else 1


if __name__ == "__main__":
    raise SystemExit(main())
