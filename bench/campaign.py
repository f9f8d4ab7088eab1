#!/usr/bin/env python3
"""Campaign throughput: a campaign end to end, from "schedule now" to "finished", by one worker
and then by two, in the same run.

One run of this script:

1. creates a fresh database (``--database postgres``, the default: a scratch database,
   default ``mailer_bench_campaign``, dropped first if left over and dropped again at the
   end; ``sqlite``: a temporary file, one worker only) and migrates it with the project's own
   migrations;
2. loads N subscribers of one topic (default 100,000) in bulk: contacts and subscriptions by
   INSERT in chunks (SQLAlchemy Core), then ANALYZE on PostgreSQL. Setup, not measured;
3. starts a counting SMTP sink in a child process (``bench/smtp_sink.py``) and one real
   ``flask --app wsgi mailer worker`` process, waits for its "starting" line and reads its RSS;
4. creates a campaign of the shipped ``newsletter`` template with ``campaigns.services.create``
   and schedules it for now with ``campaigns.services.schedule`` (as ``POST /campaigns`` and
   ``.../schedule`` do), commits, and starts the clock. The worker's scheduler fans it out
   (``INSERT ... SELECT``), delivers it (consent gate, rendering per recipient with signed
   links, SMTP) and marks it finished; the clock stops when the campaign's status is
   ``finished`` (fan-out and the scheduler's finishing round included). RSS is read again in
   the middle and at the end;
5. with ``--workers 2`` (the default on PostgreSQL): the outbox is emptied, two worker
   processes start, and a second campaign to the same N subscribers is measured the same way;
6. prints, figures last, msg/s of each run, the ratio two/one, the fan-out time, the CPU each
   party used per message (workers, sink, PostgreSQL backends), how busy the machine was and
   the share other processes took meanwhile ("others": on a busy machine the rates mean
   little), and the workers' RSS at start and end.

It reuses ``bench/delivery.py``'s helpers (databases, service environment, worker processes,
CPU and RSS readings) and ``bench/smtp_sink.py``'s sink.

    .venv/bin/python bench/campaign.py [--subscribers 100000] [--database postgres|sqlite]
        [--workers 1|2] [--connections 4] [--batch N]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432]
        [--pg-database mailer_bench_campaign] [--json FILE]

Everything listens on and connects to 127.0.0.1 only. Exit status: 0 when the benchmark ran
(whatever the figures), 2 when it could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import delivery  # bench/ is on sys.path when this runs as a script
from delivery import (
    HOST,
    INSERT_CHUNK,
    ROOT,
    TEMPLATE,
    TOPIC_NAME,
    TOPIC_SLUG,
    BenchError,
    busy_pct,
    cpu_times,
    database_backend_cpu,
    own_cpu_seconds,
    process_cpu_seconds,
    rss_mb,
    run_bench,
    start_worker,
    stop_worker,
)
from smtp_sink import spawn_sink

CAMPAIGN_DATA = {
    "headline": "Autumn news from the Music Store",
    "intro": "Our autumn catalogue is here, with a few records and instruments we think you "
             "will like.",
    "items": [
        {"name": "Stratocaster Player II", "price": "€749", "url": f"{delivery.BASE_URL}/p/strat"},
        {"name": "Nord Stage 4 88", "price": "€4,599", "url": f"{delivery.BASE_URL}/p/nord"},
        {"name": "Shure SM7dB", "price": "€499", "url": f"{delivery.BASE_URL}/p/sm7"},
    ],
}
RUN_TIMEOUT = 3600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000, help="N (default 100,000)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=None,
                        help="2: one worker, then two (default on PostgreSQL); 1: one only")
    parser.add_argument("--connections", type=int,
                        default=int(os.environ.get("MAILER_SMTP_CONNECTIONS") or 4),
                        help="SMTP connections per worker (default MAILER_SMTP_CONNECTIONS or 4)")
    parser.add_argument("--batch", type=int, default=None,
                        help="MAILER_WORKER_BATCH for the workers (default: the worker's own)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created on it)")
    parser.add_argument("--pg-database", default="mailer_bench_campaign")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write figures as JSON")
    args = parser.parse_args(argv)
    if args.subscribers < 1:
        parser.error("--subscribers must be at least 1")
    if args.workers is None:
        args.workers = 2 if args.database == "postgres" else 1
    if args.workers == 2 and args.database != "postgres":
        parser.error("--workers 2 needs --database postgres (SQLite has one writer at a time)")
    return args


# --------------------------------------------------------------------------- setup


def load_subscribers(app: Any, count: int) -> None:
    """`count` contacts subscribed to the topic, by bulk INSERT (setup, not measured)."""
    from sqlalchemy import insert, select, text

    from mailer import addresses
    from mailer.consent.models import Subscription, SubscriptionState
    from mailer.contacts.models import Contact
    from mailer.database import utcnow
    from mailer.extensions import db
    from mailer.topics.services import create_topic

    with app.app_context():
        topic = create_topic(TOPIC_SLUG, TOPIC_NAME, "", double_opt_in=False, public=True)
        db.session.commit()
        now = utcnow()
        for start in range(0, count, INSERT_CHUNK):
            chunk = [delivery.recipient(i)[0] for i in range(start, min(start + INSERT_CHUNK,
                                                                        count))]
            db.session.execute(insert(Contact.__table__), [
                {"email": address, "address_hash": addresses.keyed_hash(address),
                 "attributes": {}, "source": "bench", "partner_sharing": False,
                 "created_at": now, "updated_at": now} for address in chunk
            ])
        ids = db.session.scalars(select(Contact.id).order_by(Contact.id)).all()
        for start in range(0, len(ids), INSERT_CHUNK):
            db.session.execute(insert(Subscription.__table__), [
                {"contact_id": contact_id, "topic_id": topic.id,
                 "state": SubscriptionState.SUBSCRIBED.value, "created_at": now,
                 "updated_at": now} for contact_id in ids[start:start + INSERT_CHUNK]
            ])
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # Statistics, as autovacuum would have gathered them on a live database.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        db.session.remove()
        db.engine.dispose()


def schedule_campaign(app: Any, name: str) -> int:
    """Create the campaign and schedule it for now through the services; commits."""
    from mailer.campaigns import services
    from mailer.extensions import db

    with app.app_context():
        campaign = services.create(name, TOPIC_SLUG, TEMPLATE, CAMPAIGN_DATA, None)
        services.schedule(campaign, None)
        db.session.commit()
        campaign_id = campaign.id
        db.session.remove()
    return campaign_id


# --------------------------------------------------------------------------- a run


@dataclass
class RunResult:
    label: str
    workers: int
    recipients: int
    seconds: float  # from the schedule's commit to the status "finished"
    fanout_seconds: float  # to fanout_done
    sink_seconds: float  # to the sink's last message
    stats: dict[str, int]
    rss_mb: dict[str, list[float]]
    worker_cpu_ms_per_msg: float
    sink_cpu_ms_per_msg: float
    db_cpu_ms_per_msg: float
    machine_busy_pct: float
    others_pct: float
    exit_codes: list[int]
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds


class Watcher:
    """Reads the campaign's state over a connection of its own (not the app's)."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(database_url)

    def campaign(self, campaign_id: int) -> tuple[str, bool, int]:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            status, done, recipients = connection.execute(
                text("SELECT status, fanout_done, recipients FROM campaigns WHERE id = :id"),
                {"id": campaign_id}).one()
        return status, bool(done), int(recipients)

    def stats(self, campaign_id: int) -> dict[str, int]:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT status, count(*) FROM messages WHERE campaign_id = :id GROUP BY status"),
                {"id": campaign_id})
            return {status: int(n) for status, n in rows}

    def close(self) -> None:
        self.engine.dispose()


def run_campaign(label: str, n_workers: int, app: Any, env: dict[str, str], database_url: str,
                 sink: Any, expected: int) -> RunResult:
    """Start the workers, schedule a campaign now, and time it until it is finished."""
    workers = [start_worker(env) for _ in range(n_workers)]
    watcher = Watcher(database_url)
    rss: dict[str, list[float]] = {}
    try:
        for worker in workers:
            if not worker.started.wait(60):
                raise BenchError("a worker did not start:\n" + "\n".join(worker.lines[-30:]))
        time.sleep(1.0)  # let their first (empty) claims and scheduler rounds pass
        rss["start"] = [rss_mb(w.pid) for w in workers]
        sink_before = sink.count
        sink_cpu_before = process_cpu_seconds(sink._process.pid)
        worker_cpu_before = sum(process_cpu_seconds(w.pid) for w in workers)
        db_before = database_backend_cpu(database_url)
        machine_before = cpu_times()
        own_before = own_cpu_seconds()

        campaign_id = schedule_campaign(app, label)
        started = time.perf_counter()
        fanned_out = sink_done = None
        last_report = started
        while True:
            time.sleep(0.2)
            for worker in workers:
                if worker.process.poll() is not None:
                    raise BenchError("a worker exited early:\n" + "\n".join(worker.lines[-30:]))
            now = time.perf_counter()
            if now - started > RUN_TIMEOUT:
                raise BenchError(f"{label}: the campaign did not finish in {RUN_TIMEOUT:.0f} s")
            status, done, _recipients = watcher.campaign(campaign_id)
            if done and fanned_out is None:
                fanned_out = now
            delivered = sink.count - sink_before
            if "middle" not in rss and delivered >= expected // 2:
                rss["middle"] = [rss_mb(w.pid) for w in workers]
            if sink_done is None and delivered >= expected:
                sink_done = now
            if now - last_report >= 10:
                print(f"  {label}: {delivered:,} delivered after {now - started:.0f} s "
                      f"({delivered / (now - started):,.0f} msg/s so far)", flush=True)
                last_report = now
            if status == "finished":
                finished = now
                break
        rss["end"] = [rss_mb(w.pid) for w in workers]
        machine_after = cpu_times()
        worker_cpu = sum(process_cpu_seconds(w.pid) for w in workers) - worker_cpu_before
        own_cpu = own_cpu_seconds() - own_before
        db_after = database_backend_cpu(database_url)
        sink_cpu = process_cpu_seconds(sink._process.pid) - sink_cpu_before
        _status, _done, recipients = watcher.campaign(campaign_id)
        stats = watcher.stats(campaign_id)
    finally:
        codes = [stop_worker(w) for w in workers]
        watcher.close()
    delivered = sink.count - sink_before
    elapsed = finished - started
    db_cpu = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
    machine = busy_pct(machine_before, machine_after)
    ours = 100.0 * (worker_cpu + sink_cpu + db_cpu + own_cpu) / (elapsed * (os.cpu_count() or 1))
    problems = [line for w in workers for line in w.problems()]
    if recipients != expected:
        problems.append(f"the campaign had {recipients} recipients, not {expected}")
    if delivered != expected or stats.get("sent", 0) != expected:
        problems.append(f"the sink counted {delivered} and the database {stats} "
                        f"for {expected} recipients")
    return RunResult(
        label=label, workers=n_workers, recipients=recipients, seconds=elapsed,
        fanout_seconds=(fanned_out or finished) - started,
        sink_seconds=(sink_done or finished) - started, stats=stats, rss_mb=rss,
        worker_cpu_ms_per_msg=1e3 * worker_cpu / max(recipients, 1),
        sink_cpu_ms_per_msg=1e3 * sink_cpu / max(recipients, 1),
        db_cpu_ms_per_msg=1e3 * db_cpu / max(recipients, 1),
        machine_busy_pct=machine, others_pct=max(machine - ours, 0.0),
        exit_codes=codes, problems=problems,
    )


def bench(args: argparse.Namespace) -> list[RunResult]:
    with tempfile.TemporaryDirectory(prefix="mailer-bench-campaign-") as workdir:
        if args.database == "sqlite":
            database = delivery.sqlite_database(Path(workdir))
        else:
            database = delivery.postgres_database(args.pg_url, args.pg_database)
        with database as database_url, spawn_sink(0, HOST) as sink:
            env = delivery.service_env(database_url, sink.url, secrets.token_urlsafe(32), args)
            app = delivery.make_app(env)
            print(f"database: {args.database} ({delivery.redact(database_url)}); sink: "
                  f"{sink.url} (a child process); {args.connections} SMTP connections per "
                  "worker", flush=True)
            import flask_migrate

            with app.app_context():
                flask_migrate.upgrade(directory=str(ROOT / "migrations"), revision="heads")
            started = time.perf_counter()
            load_subscribers(app, args.subscribers)
            print(f"loaded {args.subscribers:,} subscribers in "
                  f"{time.perf_counter() - started:.1f} s (setup, not measured)", flush=True)
            runs = [run_campaign("1 worker", 1, app, env, database_url, sink, args.subscribers)]
            print_run(runs[-1])
            if args.workers == 2:
                # The same subscribers again, for a second campaign: the first one's rows go,
                # so both runs start from an empty outbox.
                delivery.reset_outbox(database_url)
                runs.append(run_campaign("2 workers", 2, app, env, database_url, sink,
                                         args.subscribers))
                print_run(runs[-1])
            return runs


# --------------------------------------------------------------------------- output


def print_run(run: RunResult) -> None:
    print(f"  {run.label}: {run.recipients:,} recipients finished in {run.seconds:.1f} s "
          f"(fan-out done after {run.fanout_seconds:.1f} s); statuses {run.stats}; exit codes "
          f"{run.exit_codes}", flush=True)
    for line in run.problems[:10]:
        print(f"  ! {line}", flush=True)


def rss_text(run: RunResult) -> str:
    return ", ".join(f"{point} " + "/".join(f"{v:.0f}" for v in values)
                     for point, values in run.rss_mb.items()) + " MB"


def print_summary(args: argparse.Namespace, runs: list[RunResult]) -> None:
    print()
    print(f"Campaign benchmark: {args.database}, {args.subscribers:,} subscribers, a campaign "
          f"from schedule to finished, {args.connections} SMTP connections per worker, "
          f"{os.cpu_count()} CPUs")
    noisy = max(r.others_pct for r in runs)
    if noisy > 10:
        print(f"note: other processes used up to {noisy:.0f}% of the machine during the run "
              "(column 'others'); the rates are lower than on a quiet machine")
    print("-" * 118)
    print(f"{'run':<10} {'msg/s':>7} {'seconds':>8} {'fan-out s':>9} {'CPU ms/msg: workers':>20} "
          f"{'sink':>6} {'db':>6} {'machine':>8} {'others':>7}  worker RSS")
    for run in runs:
        print(f"{run.label:<10} {run.rate:>7,.0f} {run.seconds:>8.1f} {run.fanout_seconds:>9.1f} "
              f"{run.worker_cpu_ms_per_msg:>20.3f} {run.sink_cpu_ms_per_msg:>6.3f} "
              f"{run.db_cpu_ms_per_msg:>6.3f} {run.machine_busy_pct:>7.0f}% "
              f"{run.others_pct:>6.0f}%  {rss_text(run)}")
    print("-" * 118)
    one = runs[0]
    line = f"{args.database}: 1 worker {one.rate:,.0f} msg/s"
    if len(runs) == 2:
        two = runs[1]
        line += f", 2 workers {two.rate:,.0f} msg/s, ratio two/one {two.rate / one.rate:.2f}"
    print(line)
    clean = all(not r.problems and not any(r.exit_codes) for r in runs)
    print("result: " + ("every recipient got the mail once, workers exited 0" if clean
                        else "PROBLEMS (see the lines marked !)"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: bench(args), lambda runs: finish(args, runs))


def finish(args: argparse.Namespace, runs: list[RunResult]) -> int:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"database": args.database, "subscribers": args.subscribers,
             "connections": args.connections,
             "runs": [{**asdict(r), "rate": r.rate} for r in runs]}, indent=2))
    print_summary(args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
