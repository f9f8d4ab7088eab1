"""Fan-out benchmark: a campaign to 1,000,000 subscribers becomes outbox rows on PostgreSQL.

    .venv/bin/python bench/fanout.py [--subscribers 1000000] [--rounds 1]
        [--pg-url postgresql://postgres@127.0.0.1:5432]

Creates a scratch database (mailer_bench_fanout, dropped first and at the end), migrates it,
and loads the subscribers with COPY (setup, not measured): N contacts with random keyed-hash
style address hashes (SHA-256 hex, as addresses.keyed_hash makes them, so index inserts land
where real ones would), all subscribed to one topic, vacuumed as autovacuum would; 1 % of
them carry an address-wide mark (bounced, quarantined...) and 0.5 % have left the topic, so the
suppression anti-join has rows to find. Then, each round (the outbox emptied before it):

1. fan-out: the real code, mailer.campaigns.fanout.fan_out_batch in batches of
   scheduler.FANOUT_BATCH contact ids, each batch its own transaction with its cursor, as the
   worker runs it; its row count is checked against what the marks allow.
2. bare: ONE plain `INSERT INTO <copy> (...) SELECT ...` of the same rows (the same SELECT,
   public-id expression and columns), no batches, no cursor, no ON CONFLICT, into a copy of
   the messages table made with CREATE TABLE ... (LIKE messages ...):
   - "bare, no index": INCLUDING DEFAULTS only: the heap alone, the floor of any fan-out;
   - "bare, outbox indexes": INCLUDING ALL: the outbox's own indexes and CHECKs. A copy
     made by LIKE has no foreign keys, so fan-out minus this figure is what the two
     foreign-key checks per row (topic, campaign), the batches and their commits cost.

Each figure is wall time, with the CPU seconds of the database backend doing the work (less
sensitive than wall time to other work on the machine) and how busy the machine was. Every
figure is printed once measured; the summary comes last, the fan-out's line (goal <= 10 s for
1,000,000) at the very end. Exit status 0 when every round queued the expected rows.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH = "mailer_bench_fanout"
GOAL_SECONDS = 10.0
MARKS = ("bounced", "complained", "left", "erased", "blocked", "quarantined")


@dataclass
class Figure:
    name: str
    seconds: float
    backend_cpu: float
    machine_busy: float
    rows: int


def admin_url(base: str) -> str:
    return base.rstrip("/") + "/postgres"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a local process (the database backend), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # gone, or the server is not on this machine
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Backends:
    """CPU seconds used by the scratch database's backends (the server runs on this machine)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def _pids(self) -> set[int]:
        return {pid for (pid,) in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")}

    def start(self) -> None:
        self.before = {pid: _cpu_seconds(pid) for pid in self._pids()}

    def used(self) -> float:
        return sum(_cpu_seconds(pid) - self.before.get(pid, 0.0)
                   for pid in self._pids() | set(self.before))

    def checkpoint(self) -> None:
        self.conn.execute("CHECKPOINT")


def measure(name: str, backends: Backends, work: Callable[[], int]) -> Figure:
    backends.checkpoint()  # each figure starts with no dirty buffers left by the one before
    busy0, total0 = _machine_ticks()
    backends.start()
    started = time.perf_counter()
    rows = work()
    seconds = time.perf_counter() - started
    busy1, total1 = _machine_ticks()
    figure = Figure(name, seconds, backends.used(),
                    (busy1 - busy0) / max(1, total1 - total0), rows)
    print(f"  {name:<24} {rows:>10,} rows  {seconds:6.2f} s  backend CPU "
          f"{figure.backend_cpu:6.2f} s  machine {figure.machine_busy:4.0%} busy", flush=True)
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1, help="fan-out + bare runs, each "
                        "into an emptied outbox (setup is done once)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    with psycopg.connect(admin_url(args.pg_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {SCRATCH}")
    url = f"{args.pg_url.rstrip('/')}/{SCRATCH}"
    try:
        return run(url, args.subscribers, args.rounds)
    finally:
        with psycopg.connect(admin_url(args.pg_url), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


def load(url: str, count: int, topic_id: int) -> int:
    """COPY the contacts, subscribe them, mark some; returns how many may get the campaign."""
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
            "COPY contacts (email, address_hash, attributes, partner_sharing, created_at,"
            " updated_at) FROM STDIN"
        ) as copy:
            buffer = io.StringIO()
            for i in range(count):
                address_hash = hashlib.sha256(b"fan%d" % i).hexdigest()
                buffer.write(f"fan{i}@example.com\t{address_hash}\t{{}}\tf\t"
                             "2026-11-25 00:00:00+00\t2026-11-25 00:00:00+00\n")
                if i % 100_000 == 99_999:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        # Every 200th contact has left the topic, every 100th (others) carries a mark.
        conn.execute(
            "INSERT INTO subscriptions (contact_id, topic_id, state, created_at, updated_at) "
            "SELECT id, %s, CASE WHEN id %% 200 = 7 THEN 'unsubscribed' ELSE 'subscribed' END,"
            " now(), now() FROM contacts", (topic_id,))
        conn.execute(
            "INSERT INTO suppressions (address_hash, reason, scope, topic_id, created_at) "
            "SELECT address_hash, (%s::text[])[1 + (id / 100) %% 6], "
            "CASE WHEN (%s::text[])[1 + (id / 100) %% 6] = 'bounced' THEN 'all' "
            "ELSE 'promotional' END, NULL, now() FROM contacts WHERE id %% 100 = 3",
            (list(MARKS), list(MARKS)))
        conn.commit()
        # As autovacuum leaves tables that have been there a while (hint bits set, visibility
        # map made): otherwise the first round pays for setting them on a million new rows.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        return conn.execute(
            "SELECT count(*) FROM contacts c JOIN subscriptions s ON s.contact_id = c.id "
            "WHERE s.state = 'subscribed' AND NOT EXISTS "
            "(SELECT 1 FROM suppressions x WHERE x.address_hash = c.address_hash)"
        ).fetchone()[0]


def run(url: str, count: int, rounds: int) -> int:
    import flask_migrate
    from sqlalchemy import column, func, select, table, text
    from sqlalchemy.dialects import postgresql

    from config import TestConfig
    from mailer import create_app
    from mailer.campaigns import scheduler, services
    from mailer.campaigns.fanout import INSERT_COLUMNS, fan_out_batch, recipients_query
    from mailer.campaigns.models import Campaign
    from mailer.extensions import db
    from mailer.messages.models import Message
    from mailer.topics.services import create_topic

    config = TestConfig.from_env({})
    config.MAILER_DATABASE_URL = url.replace("postgresql://", "postgresql+psycopg://", 1)
    config.MAILER_SECRET_KEYS = ["bench"]
    config.MAILER_FROM = "Shop <news@shop.example>"
    config.MAILER_POSTAL_ADDRESS = "1 High Street"
    app = create_app(config)
    figures: list[list[Figure]] = []
    ok = True
    with app.app_context():
        flask_migrate.upgrade()
        topic = create_topic("news", "News", "", False, True)
        db.session.commit()
        started = time.perf_counter()
        expected = load(url, count, topic.id)
        print(f"setup: {count:,} subscribers ({expected:,} without a mark or unsubscribe) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE bare_heap (LIKE messages INCLUDING DEFAULTS)"))
            connection.execute(text("CREATE TABLE bare_indexed (LIKE messages INCLUDING ALL)"))
        backends = Backends(url)

        for round_number in range(1, rounds + 1):
            print(f"round {round_number}:", flush=True)
            with db.engine.begin() as connection:
                connection.execute(text("TRUNCATE messages, bare_heap, bare_indexed"))
            campaign = services.create(f"Bench {round_number}", "news", "newsletter",
                                       {"headline": "Hi", "intro": "Hello"}, None)
            services.schedule(campaign, None)
            db.session.commit()
            def fan_out(campaign: Campaign = campaign) -> int:
                while not fan_out_batch(campaign, scheduler.FANOUT_BATCH):
                    db.session.commit()
                db.session.commit()
                return db.session.scalar(select(func.count()).select_from(Message)
                                         .where(Message.campaign_id == campaign.id))

            this_round = [measure(f"fan-out ({scheduler.FANOUT_BATCH:,}/batch)", backends,
                                  fan_out)]
            if this_round[0].rows != expected or campaign.recipients != expected:
                print(f"  WRONG: {this_round[0].rows:,} rows, campaign.recipients "
                      f"{campaign.recipients:,}, expected {expected:,}")
                ok = False

            # The same SELECT as the fan-out's, over every id at once, in no particular order.
            rows = recipients_query(campaign, 0, count).order_by(None)
            for name, copy in (("bare, no index", "bare_heap"),
                               ("bare, outbox indexes", "bare_indexed")):
                statement = postgresql.insert(
                    table(copy, *(column(name) for name in INSERT_COLUMNS))
                ).from_select(INSERT_COLUMNS, rows).execution_options(preserve_rowcount=True)

                def bare(statement=statement) -> int:
                    inserted = db.session.execute(statement).rowcount
                    db.session.commit()
                    return inserted

                this_round.append(measure(name, backends, bare))
            figures.append(this_round)
        db.session.remove()
        db.engine.dispose()
        backends.conn.close()

    print()
    print(f"== fan-out of {count:,} subscribers ({expected:,} queued) on PostgreSQL, "
          f"{rounds} round(s), {os.cpu_count()} CPUs")
    print("   bare = one INSERT ... SELECT of the same rows into a copy of the messages table"
          " (LIKE messages: no foreign keys),")
    print("   no batches, cursor or ON CONFLICT; 'no index': heap only, 'outbox indexes':"
          " INCLUDING ALL")
    for index, name in ((1, "bare, no index"), (2, "bare, outbox indexes"), (0, "fan-out")):
        runs = [f"{r[index].seconds:6.2f} s (CPU {r[index].backend_cpu:5.2f}, "
                f"{r[index].machine_busy:4.0%} busy)" for r in figures]
        best = min(r[index].seconds for r in figures)
        if index == 0:
            print(f"{name:<22} {' | '.join(runs)}  best {best:.2f} s; goal <= "
                  f"{GOAL_SECONDS * count / 1_000_000:.1f} s -> "
                  f"{'PASS' if best <= GOAL_SECONDS * count / 1_000_000 else 'MISS'}; "
                  f"fan-out/bare(indexes) {best / min(r[2].seconds for r in figures):.2f}")
        else:
            print(f"{name:<22} {' | '.join(runs)}  best {best:.2f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
