#!/usr/bin/env python3
"""Delivery throughput: the real worker, end to end, against the bare SMTP send rate.

One run of this script:

1. creates a fresh database (``--database sqlite``: a temporary file; ``postgres``: a
   scratch database, default ``mailer_bench_delivery``, dropped first if left over and
   dropped again at the end) and migrates it with the project's own migrations;
2. queues N promotional messages (default 100,000) of the shipped ``newsletter`` template
   for N contacts subscribed to one topic. This is setup, not what is measured, so the
   rows go in by bulk INSERT (SQLAlchemy Core) into contacts, subscriptions and messages;
   they are what ``messages.services.accept`` would create: the first message *is* made by
   accept(), and every bulk row is checked against it column by column. On PostgreSQL the
   tables are then ANALYZEd, as autovacuum would have done on a live database;
3. starts a counting SMTP sink in a child process (``bench/smtp_sink.py``) and one delivery
   worker as a real ``flask --app wsgi mailer worker`` process (the real Worker and the real
   SmtpPool with MAILER_SMTP_CONNECTIONS connections, default 4); each mail is rendered for
   its recipient (signed unsubscribe and preferences links, footer), the consent gate looks
   again, and it goes out over SMTP. The clock runs from the worker's "starting" log line
   until the database records every message as sent; the worker's RSS is read at start,
   after the first batches, in the middle and at the end (from /proc, or psutil);
4. measures, in the same run, the bare rate: ``bare_send_rate`` sends one real message
   built by the pipeline (compose + build for one of the recipients), pre-built, through an
   SmtpPool of the same number of connections to the same sink, no database, no rendering;
   half of the bare messages go before the workers run and half after, so that a change in
   the machine's load weighs on both figures alike;
5. prints both rates and the ratio end-to-end/bare (goals: ratio >= 0.6 and >= 1,000 msg/s
   end to end, worker RSS flat), the figures last, with the CPU each party used per message
   (worker, its event loop thread, sink, PostgreSQL backends) and the share of the machine
   that other processes took meanwhile ("others"): on a busy machine the rates mean little.

``--workers 2`` (PostgreSQL only): the same N are sent by one worker process, then N new
ones by two worker processes at once, against the same sink; it prints msg/s of each and
the ratio two/one.

Run with the project's venv from the repository root:

    .venv/bin/python bench/delivery.py [--database sqlite|postgres] [--messages 100000]
        [--workers 1|2] [--connections 4] [--bare-messages N] [--batch 200]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432]
        [--pg-database mailer_bench_delivery] [--py-spy DIR [--py-spy-format raw]]
        [--json FILE] [--check]

Everything listens on and connects to 127.0.0.1 only. Exit status: 0 when the benchmark
ran (whatever the figures; with ``--check`` 1 when a goal was missed), 2 when it could not
run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for entry in (str(ROOT), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from smtp_sink import bare_send_rate, spawn_sink  # noqa: E402

HOST = "127.0.0.1"
TOPIC_SLUG = "autumn-news"
TOPIC_NAME = "Music Store news"
TEMPLATE = "newsletter"
SENDER = "Music Store <news@shop.example>"
POSTAL = "Music Store GmbH, 1 High Street, 12345 Town"
BASE_URL = "https://shop.example"
INSERT_CHUNK = 5_000

GOAL_RATIO = 0.6
GOAL_RATE = 1_000.0
# RSS counts as flat when it grows by less than this from the first batches to the end.
GOAL_RSS_GROWTH_MB = 20.0

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


def run_bench(measure: Callable[[], T], report: Callable[[T], int]) -> int:
    """Run a benchmark as a script: SIGTERM stops it as Ctrl-C does; the exit status is
    `report`'s, or 2 when it could not run (why, on standard error), 130 when interrupted."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        measured = measure()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return report(measured)


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--messages", type=int, default=100_000, help="N (default 100,000)")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1,
                        help="2: one worker, then two worker processes (PostgreSQL only)")
    parser.add_argument("--connections", type=int,
                        default=int(os.environ.get("MAILER_SMTP_CONNECTIONS") or 4),
                        help="SMTP connections per worker (default MAILER_SMTP_CONNECTIONS or 4)")
    parser.add_argument("--bare-messages", type=int, default=None,
                        help="messages for the bare rate (default: N, at least 20,000)")
    parser.add_argument("--batch", type=int, default=None,
                        help="MAILER_WORKER_BATCH for the worker (default: the worker's own)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created on it)")
    parser.add_argument("--pg-database", default="mailer_bench_delivery")
    parser.add_argument("--py-spy", metavar="DIR", default=None,
                        help="record each worker with py-spy into DIR/<run>-<pid>.svg")
    parser.add_argument("--py-spy-format", choices=("flamegraph", "raw", "speedscope"),
                        default="flamegraph", help="py-spy's output format (default flamegraph)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write figures as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.workers == 2 and args.database != "postgres":
        parser.error("--workers 2 needs --database postgres (SQLite has one writer at a time)")
    if args.bare_messages is None:
        args.bare_messages = max(args.messages, 20_000)
    return args


# --------------------------------------------------------------------------- machine


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process (0 when unreadable)."""
    with suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        values = stat[stat.rindex(")") + 2:].split()
        return (int(values[11]) + int(values[12])) / CLOCK_TICKS
    return 0.0


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds so far of a process's main thread and of all its other threads together."""
    main = other = 0.0
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError, ValueError, IndexError):
                stat = (task / "stat").read_text()
                values = stat[stat.rindex(")") + 2:].split()
                seconds = (int(values[11]) + int(values[12])) / CLOCK_TICKS
                if int(task.name) == pid:
                    main += seconds
                else:
                    other += seconds
    return main, other


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the benchmark's polling)."""
    times = os.times()
    return times.user + times.system


def database_backend_cpu(database_url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the scratch database ({} for
    SQLite, or when they cannot be read)."""
    if not database_url.startswith("postgresql"):
        return {}
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    try:
        with psycopg.connect(f"postgresql://{parts.netloc}/postgres", autocommit=True,
                             connect_timeout=5) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                (name,)).fetchall()
    except psycopg.Error:
        return {}
    return {int(pid): process_cpu_seconds(int(pid)) for (pid,) in rows}


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB: psutil when the venv has it, else /proc."""
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        psutil = None
    if psutil is not None:
        with suppress(Exception):
            return psutil.Process(pid).memory_info().rss / 2**20
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- databases


def _pg_admin_conninfo(pg_url: str) -> str:
    parts = urlsplit(pg_url)
    if parts.scheme.split("+", 1)[0] not in {"postgresql", "postgres"}:
        raise BenchError(f"--pg-url must be a postgresql:// URL, got {pg_url!r}")
    return f"postgresql://{parts.netloc}/postgres"


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'mailer_bench_delivery.db'}"


@contextmanager
def postgres_database(pg_url: str, name: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    conninfo = _pg_admin_conninfo(pg_url)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(drop)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"cannot create PostgreSQL database {name!r} via {conninfo}: {exc}\n"
                         "Is PostgreSQL running on 127.0.0.1:5432 (see --pg-url)?") from exc
    base = pg_url.rstrip("/")
    if not urlsplit(base).scheme.endswith("+psycopg"):
        base = "postgresql+psycopg://" + base.split("://", 1)[1]
    try:
        yield f"{base}/{name}"
    finally:
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute(drop)
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name!r}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------- the app


def service_env(database_url: str, smtp_url: str, secret: str,
                args: argparse.Namespace) -> dict[str, str]:
    """The environment of the service (this process's app and the worker processes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_ENV="production",
        MAILER_DATABASE_URL=database_url,
        MAILER_SECRET_KEYS=secret,
        # Production refuses to start without its own address-hash key (README, Deploying).
        MAILER_ADDRESS_HASH_KEY=secret,
        MAILER_BASE_URL=BASE_URL,
        MAILER_FROM=SENDER,
        MAILER_POSTAL_ADDRESS=POSTAL,
        MAILER_SMTP_URL=smtp_url,
        MAILER_SMTP_CONNECTIONS=str(args.connections),
        MAILER_LOG_LEVEL="INFO",
        MAILER_RATELIMIT_ENABLED="0",
    )
    if args.batch:
        env["MAILER_WORKER_BATCH"] = str(args.batch)
    return env


def make_app(env: dict[str, str]) -> Any:
    from config import config_from_env
    from mailer import create_app

    return create_app(config_from_env(env))


def recipient(i: int) -> tuple[str, dict[str, Any]]:
    """The address and the template data of recipient `i` (a few per-recipient fields)."""
    first_name = f"Reader{i}"
    data = {
        "headline": "Autumn news from the Music Store",
        "intro": (f"Hello {first_name}, our autumn catalogue is here, with a few records and "
                  f"instruments we think you will like. Your customer number is {100000 + i}."),
        "items": [
            {"name": "Stratocaster Player II", "price": "€749",
             "url": f"{BASE_URL}/p/strat?c={i}"},
            {"name": "Nord Stage 4 88", "price": "€4,599", "url": f"{BASE_URL}/p/nord?c={i}"},
            {"name": "Shure SM7dB", "price": "€499", "url": f"{BASE_URL}/p/sm7?c={i}"},
        ],
    }
    return f"reader{i}@example.org", data


@dataclass
class Queued:
    topic_id: int
    sample: bytes  # one real message, built by the pipeline for one of the recipients


def queue_messages(app: Any, count: int, *, first_number: int = 0,
                   with_contacts: bool = True) -> Queued:
    """Create `count` subscribed contacts (when `with_contacts`) and one queued promotional
    message for each; answer the topic and one message built as the worker builds it."""
    from sqlalchemy import func, insert, select, text

    from mailer import addresses
    from mailer.consent.models import Subscription, SubscriptionState
    from mailer.contacts.models import Contact
    from mailer.database import utcnow
    from mailer.extensions import db
    from mailer.messages import services
    from mailer.messages.compose import Envelope, TopicInfo, compose
    from mailer.messages.mime import build
    from mailer.messages.models import Category, Message, MessageStatus
    from mailer.topics.models import Topic
    from mailer.topics.services import create_topic

    with app.app_context():
        topic = db.session.scalar(select(Topic).where(Topic.slug == TOPIC_SLUG))
        if topic is None:
            topic = create_topic(TOPIC_SLUG, TOPIC_NAME, "", double_opt_in=False, public=True)
            db.session.commit()
        topic_id = topic.id
        numbers = range(first_number, first_number + count)
        people = [recipient(i) for i in numbers]
        hashes = {}
        for address, _data in people[:3]:  # the bulk rows use the service's normal form
            if addresses.normalize(address) != address:
                raise BenchError(f"{address} is not in normal form")
        for address, _data in people:
            hashes[address] = addresses.keyed_hash(address)

        if with_contacts:
            now = utcnow()
            for start in range(0, count, INSERT_CHUNK):
                chunk = people[start:start + INSERT_CHUNK]
                db.session.execute(insert(Contact.__table__), [
                    {"email": address, "address_hash": hashes[address],
                     "attributes": {"first_name": data["intro"].split(",")[0][6:]},
                     "source": "bench", "partner_sharing": False,
                     "created_at": now, "updated_at": now}
                    for address, data in chunk
                ])
            ids = dict(db.session.execute(
                select(Contact.email, Contact.id).where(Contact.source == "bench")).all())
            for start in range(0, count, INSERT_CHUNK):
                chunk = people[start:start + INSERT_CHUNK]
                db.session.execute(insert(Subscription.__table__), [
                    {"contact_id": ids[address], "topic_id": topic_id,
                     "state": SubscriptionState.SUBSCRIBED.value,
                     "created_at": now, "updated_at": now}
                    for address, _data in chunk
                ])
            db.session.commit()

        # The first message through the service itself: the reference for the bulk rows.
        first_address, first_data = people[0]
        reference = services.accept(services.SendRequest(
            to=first_address, template=TEMPLATE, data=first_data,
            category=Category.PROMOTIONAL, topic=TOPIC_SLUG))
        db.session.commit()
        reference_id = reference.id

        now = utcnow()
        for start in range(1, count, INSERT_CHUNK):
            chunk = people[start:start + INSERT_CHUNK]
            db.session.execute(insert(Message.__table__), [
                {"public_id": services.new_public_id(),
                 "category": Category.PROMOTIONAL.value, "topic_id": topic_id,
                 "template": TEMPLATE, "data": data, "to_address": address,
                 "address_hash": hashes[address], "status": MessageStatus.QUEUED.value,
                 "attempts": 0, "due_at": now, "api_key_id": None,
                 "created_at": now, "updated_at": now}
                for address, data in chunk
            ])
        db.session.commit()
        db.session.expire_all()
        check_rows_like_accept(reference_id, people[1] if count > 1 else None)

        queued = db.session.scalar(select(func.count()).select_from(Message)
                                   .where(Message.status == MessageStatus.QUEUED))
        if queued != count:
            raise BenchError(f"{queued} messages queued, expected {count}")
        if db.engine.dialect.name == "postgresql":
            # Statistics, as autovacuum would have gathered them on a live database.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))

        address, data = people[-1]
        mail = compose(Envelope(
            public_id=uuid.uuid4().hex, to_address=address, address_hash=hashes[address],
            category=Category.PROMOTIONAL, template=TEMPLATE, data=data,
            topic=TopicInfo(topic_id, TOPIC_SLUG, TOPIC_NAME)))
        sample = build(mail)
        db.session.remove()
        db.engine.dispose()
    return Queued(topic_id, sample)


def check_rows_like_accept(reference_id: int, bulk: tuple[str, dict[str, Any]] | None) -> None:
    """Every column of a bulk-inserted row is what accept() wrote, but for the per-message
    values (id, public id, recipient, data, times)."""
    from sqlalchemy import select

    from mailer.extensions import db
    from mailer.messages.models import Message

    if bulk is None:
        return
    table = Message.__table__
    first = db.session.execute(select(table).where(table.c.id == reference_id)).one()._asdict()
    other = db.session.execute(
        select(table).where(table.c.to_address == bulk[0])).one()._asdict()
    per_message = {"id", "public_id", "to_address", "address_hash", "data", "due_at",
                   "created_at", "updated_at"}
    for column in table.columns.keys():  # noqa: SIM118 (names, not columns)
        if column in per_message:
            if (first[column] is None) != (other[column] is None):
                raise BenchError(f"bulk rows differ from accept() in {column}")
        elif first[column] != other[column]:
            raise BenchError(f"bulk rows differ from accept() in {column}: "
                             f"{first[column]!r} != {other[column]!r}")
    if set(first["data"]) != set(other["data"]) or other["data"] != bulk[1]:
        raise BenchError("bulk rows' data differ in shape from accept()'s")


def status_counts(database_url: str) -> dict[str, int]:
    """Messages by status (a short-lived engine, so this process holds no connection)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM messages GROUP BY status"))
            return {status: int(n) for status, n in rows}
    finally:
        engine.dispose()


def reset_outbox(database_url: str) -> None:
    """Delete every message (between the one-worker and two-worker phases)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM messages"))
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE messages"))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- workers


@dataclass
class WorkerProcess:
    process: subprocess.Popen[str]
    started: threading.Event = field(default_factory=threading.Event)
    started_at: float = 0.0
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not self.started.is_set() and "starting with" in line:
                self.started_at = time.perf_counter()
                self.started.set()
            self.lines.append(line.rstrip("\n"))
            if len(self.lines) > 2000:
                del self.lines[:1000]

    def problems(self) -> list[str]:
        return [line for line in self.lines
                if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))]


def start_worker(env: dict[str, str]) -> WorkerProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "mailer", "worker"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    worker = WorkerProcess(process)
    threading.Thread(target=worker.read, daemon=True).start()
    return worker


def stop_worker(worker: WorkerProcess, timeout: float = 20.0) -> int:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    return worker.process.returncode


@dataclass
class RunResult:
    label: str
    workers: int
    messages: int
    seconds: float
    sink_seconds: float
    statuses: dict[str, int]
    rss_mb: dict[str, list[float]]  # per point: one value per worker
    worker_cpu_ms_per_msg: float
    loop_cpu_ms_per_msg: float  # the worker's main thread: the event loop (SMTP, rendering)
    sink_cpu_ms_per_msg: float
    db_cpu_ms_per_msg: float  # PostgreSQL backends of the scratch database (0 on SQLite)
    machine_busy_pct: float
    others_pct: float  # the machine's CPU used by anything but this benchmark's processes
    exit_codes: list[int]
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def run_workers(label: str, count: int, n_workers: int, env: dict[str, str], database_url: str,
                sink: Any, args: argparse.Namespace) -> RunResult:
    """Start `n_workers` worker processes, wait until `count` more messages are recorded sent,
    stop them, and answer the figures."""
    sink_before = sink.count
    sink_cpu_before = process_cpu_seconds(sink._process.pid)
    workers = [start_worker(env) for _ in range(n_workers)]
    spies: list[subprocess.Popen[bytes]] = []
    rss: dict[str, list[float]] = {}
    try:
        for worker in workers:
            if not worker.started.wait(60):
                raise BenchError("a worker did not start:\n" + "\n".join(worker.lines[-30:]))
        started = min(w.started_at for w in workers)
        machine_before = cpu_times()
        own_before = own_cpu_seconds()
        worker_cpu_before = sum(process_cpu_seconds(w.pid) for w in workers)
        threads_before = [thread_cpu_seconds(w.pid) for w in workers]
        db_before = database_backend_cpu(database_url)
        rss["start"] = [rss_mb(w.pid) for w in workers]
        if args.py_spy:
            spies = start_py_spy(args.py_spy, args.py_spy_format, label, workers)
        points = [("first batches", max(count // 50, 1)), ("middle", count // 2)]
        sink_done = None
        last_report = time.perf_counter()
        while True:
            time.sleep(0.2)
            for worker in workers:
                if worker.process.poll() is not None:
                    raise BenchError("a worker exited early:\n" + "\n".join(worker.lines[-30:]))
            delivered = sink.count - sink_before
            while points and delivered >= points[0][1]:
                rss[points.pop(0)[0]] = [rss_mb(w.pid) for w in workers]
            now = time.perf_counter()
            if now - last_report >= 10:
                print(f"  {label}: {delivered:,} delivered, "
                      f"{delivered / (now - started):,.0f} msg/s so far", flush=True)
                last_report = now
            if delivered >= count:
                sink_done = sink_done or now
                if status_counts(database_url).get("sent", 0) >= count:
                    finished = time.perf_counter()
                    break
        rss["end"] = [rss_mb(w.pid) for w in workers]
        machine_after = cpu_times()
        worker_cpu = sum(process_cpu_seconds(w.pid) for w in workers) - worker_cpu_before
        threads_after = [thread_cpu_seconds(w.pid) for w in workers]
        loop_cpu = sum(a[0] - b[0] for a, b in zip(threads_after, threads_before, strict=True))
        own_cpu = own_cpu_seconds() - own_before
        db_after = database_backend_cpu(database_url)
        sink_cpu = process_cpu_seconds(sink._process.pid) - sink_cpu_before
    finally:
        finish_py_spy(spies)
        codes = [stop_worker(w) for w in workers]
    statuses = status_counts(database_url)
    delivered = sink.count - sink_before
    db_cpu = sum(cpu - db_before.get(pid, 0.0) for pid, cpu in db_after.items())
    elapsed = finished - started
    machine = busy_pct(machine_before, machine_after)
    ours = 100.0 * (worker_cpu + sink_cpu + db_cpu + own_cpu) / (elapsed * (os.cpu_count() or 1))
    problems = [line for w in workers for line in w.problems()]
    if delivered != count:
        problems.append(f"the sink counted {delivered} messages, not {count}")
    return RunResult(
        label=label, workers=n_workers, messages=count, seconds=finished - started,
        sink_seconds=sink_done - started, statuses=statuses, rss_mb=rss,
        worker_cpu_ms_per_msg=1e3 * worker_cpu / count,
        loop_cpu_ms_per_msg=1e3 * loop_cpu / count,
        sink_cpu_ms_per_msg=1e3 * sink_cpu / count,
        db_cpu_ms_per_msg=1e3 * db_cpu / count,
        machine_busy_pct=machine, others_pct=max(machine - ours, 0.0),
        exit_codes=codes, problems=problems,
    )


def start_py_spy(folder: str, output: str, label: str, workers: list[WorkerProcess]
                 ) -> list[subprocess.Popen[bytes]]:
    tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(tool).exists():
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    Path(folder).mkdir(parents=True, exist_ok=True)
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[output]
    return [
        subprocess.Popen([tool, "record", "--pid", str(w.pid), "--rate", "200", "--nonblocking",
                          "--format", output, "--threads", "--gil",
                          "-o", str(Path(folder) / f"{label.replace(' ', '-')}-{w.pid}.{suffix}")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for w in workers
    ]


def finish_py_spy(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        with suppress(subprocess.TimeoutExpired):
            spy.wait(30)


# --------------------------------------------------------------------------- the run


@dataclass
class BareResult:
    messages: int
    seconds: float
    sink_cpu_ms_per_msg: float
    machine_busy_pct: float
    others_pct: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def measure_bare(sink: Any, connections: int, count: int, message: bytes) -> BareResult:
    """bare_send_rate() of `count` copies of `message`, with the CPU it took around it."""
    before, machine_before = sink.count, cpu_times()
    own_before, sink_before = own_cpu_seconds(), process_cpu_seconds(sink._process.pid)
    rate = asyncio.run(bare_send_rate(sink.url, connections, count, message))
    seconds = count / rate
    machine = busy_pct(machine_before, cpu_times())
    sink_cpu = process_cpu_seconds(sink._process.pid) - sink_before
    ours = 100.0 * (own_cpu_seconds() - own_before + sink_cpu) / (seconds * (os.cpu_count() or 1))
    if sink.count - before != count:
        raise BenchError(f"the sink counted {sink.count - before} bare messages, not {count}")
    return BareResult(count, seconds, 1e3 * sink_cpu / count, machine, max(machine - ours, 0.0))


@dataclass
class Report:
    database: str
    connections: int
    message_bytes: int
    runs: list[RunResult]
    bare: list[BareResult]  # before and after the worker runs
    machine_busy_before_pct: float

    @property
    def bare_rate(self) -> float:
        return sum(b.messages for b in self.bare) / sum(b.seconds for b in self.bare)

    @property
    def bare_messages(self) -> int:
        return sum(b.messages for b in self.bare)


def bench(args: argparse.Namespace) -> Report:
    with tempfile.TemporaryDirectory(prefix="mailer-bench-delivery-") as workdir:
        if args.database == "sqlite":
            database = sqlite_database(Path(workdir))
        else:
            database = postgres_database(args.pg_url, args.pg_database)
        with database as database_url, spawn_sink(0, HOST) as sink:
            secret = secrets.token_urlsafe(32)
            env = service_env(database_url, sink.url, secret, args)
            app = make_app(env)
            print(f"database: {args.database} ({redact(database_url)}); sink: {sink.url} "
                  f"(a child process); {args.connections} SMTP connections per worker",
                  flush=True)
            import flask_migrate

            with app.app_context():
                flask_migrate.upgrade(directory=str(ROOT / "migrations"))
            started = time.perf_counter()
            queued = queue_messages(app, args.messages)
            print(f"queued {args.messages:,} promotional messages for {args.messages:,} "
                  f"subscribers in {time.perf_counter() - started:.1f} s (setup, not measured); "
                  f"a message is {len(queued.sample):,} bytes", flush=True)
            busy_before = machine_busy_pct(1.0)
            # The bare rate in two halves, before and after the workers, so that a change in
            # the machine's other load during the run weighs on both figures alike.
            first_half = args.bare_messages // 2
            print(f"bare rate: {first_half:,} pre-built messages over {args.connections} "
                  "connections...", flush=True)
            bare = [measure_bare(sink, args.connections, first_half, queued.sample)]
            runs = [run_workers("1 worker", args.messages, 1, env, database_url, sink, args)]
            print_run(runs[-1])
            if args.workers == 2:
                reset_outbox(database_url)
                queue_messages(app, args.messages, with_contacts=False)
                print(f"queued {args.messages:,} new messages for the two-worker run",
                      flush=True)
                runs.append(run_workers("2 workers", args.messages, 2, env, database_url,
                                        sink, args))
                print_run(runs[-1])

            second_half = args.bare_messages - first_half
            print(f"bare rate: {second_half:,} more pre-built messages...", flush=True)
            bare.append(measure_bare(sink, args.connections, second_half, queued.sample))
            return Report(args.database, args.connections, len(queued.sample), runs, bare,
                          busy_before)


def machine_busy_pct(seconds: float) -> float:
    before = cpu_times()
    time.sleep(seconds)
    return busy_pct(before, cpu_times())


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def print_run(run: RunResult) -> None:
    print(f"  {run.label}: {run.messages:,} sent in {run.seconds:.1f} s; statuses "
          f"{run.statuses}; exit codes {run.exit_codes}", flush=True)
    for line in run.problems[:10]:
        print(f"  ! {line}", flush=True)


def rss_text(run: RunResult) -> str:
    parts = []
    for point, values in run.rss_mb.items():
        parts.append(f"{point} " + "/".join(f"{v:.0f}" for v in values))
    return ", ".join(parts) + " MB"


def rss_growth(run: RunResult) -> float:
    base = run.rss_mb.get("first batches") or run.rss_mb["start"]
    return max(end - first for first, end in zip(base, run.rss_mb["end"], strict=True))


def goals(report: Report) -> list[str]:
    """The goals missed (empty: all met)."""
    one = report.runs[0]
    missed = []
    if one.rate / report.bare_rate < GOAL_RATIO:
        missed.append(f"ratio {one.rate / report.bare_rate:.2f} < {GOAL_RATIO}")
    if one.rate < GOAL_RATE:
        missed.append(f"{one.rate:,.0f} msg/s < {GOAL_RATE:,.0f}")
    for run in report.runs:
        if rss_growth(run) > GOAL_RSS_GROWTH_MB:
            missed.append(f"{run.label}: RSS grew {rss_growth(run):.0f} MB")
        if run.statuses.get("sent", 0) != run.messages or run.problems or any(run.exit_codes):
            missed.append(f"{run.label}: not every message sent cleanly")
    return missed


def print_summary(report: Report) -> None:
    one = report.runs[0]
    print()
    print(f"Delivery benchmark: {report.database}, {one.messages:,} promotional messages of "
          f"{report.message_bytes:,} bytes, {report.connections} SMTP connections per worker, "
          f"{os.cpu_count()} CPUs")
    noisy = max([r.others_pct for r in report.runs] + [b.others_pct for b in report.bare])
    if noisy > 10:
        print(f"note: other processes used up to {noisy:.0f}% of the machine during the run "
              "(column 'others'); the figures are lower than on a quiet machine")
    print("-" * 120)
    print(f"{'run':<12} {'msg/s':>7} {'seconds':>8} {'CPU ms/msg: worker':>19} {'(loop)':>7} "
          f"{'sink':>6} {'db':>6} {'machine':>8} {'others':>7}  worker RSS")
    for run in report.runs:
        print(f"{run.label:<12} {run.rate:>7,.0f} {run.seconds:>8.1f} "
              f"{run.worker_cpu_ms_per_msg:>19.3f} {run.loop_cpu_ms_per_msg:>7.3f} "
              f"{run.sink_cpu_ms_per_msg:>6.3f} "
              f"{run.db_cpu_ms_per_msg:>6.3f} {run.machine_busy_pct:>7.0f}% "
              f"{run.others_pct:>6.0f}%  {rss_text(run)}")
    for label, bare in zip(("bare before", "bare after"), report.bare, strict=False):
        print(f"{label:<12} {bare.rate:>7,.0f} {bare.seconds:>8.1f} {'-':>19} {'-':>7} "
              f"{bare.sink_cpu_ms_per_msg:>6.3f} {'-':>6} {bare.machine_busy_pct:>7.0f}% "
              f"{bare.others_pct:>6.0f}%  ({bare.messages:,} pre-built messages)")
    print("-" * 120)
    print(f"{report.database}: end-to-end {one.rate:,.0f} msg/s, bare {report.bare_rate:,.0f} "
          f"msg/s, ratio {one.rate / report.bare_rate:.2f} (goal >= {GOAL_RATIO}, and >= "
          f"{GOAL_RATE:,.0f} msg/s); worker RSS growth {rss_growth(one):+.0f} MB "
          f"(goal flat, < {GOAL_RSS_GROWTH_MB:.0f})")
    if len(report.runs) == 2:
        two = report.runs[1]
        print(f"{report.database}: 1 worker {one.rate:,.0f} msg/s, 2 workers {two.rate:,.0f} "
              f"msg/s, ratio two/one {two.rate / one.rate:.2f}")
    missed = goals(report)
    print("result: " + ("PASS" if not missed else "MISS (" + "; ".join(missed) + ")"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: bench(args), lambda report: finish(args, report))


def finish(args: argparse.Namespace, report: Report) -> int:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {**asdict(report), "bare_rate": report.bare_rate,
             "runs": [{**asdict(r), "rate": r.rate} for r in report.runs],
             "bare": [{**asdict(b), "rate": b.rate} for b in report.bare]},
            indent=2))
    print_summary(report)
    return 1 if args.check and goals(report) else 0


if __name__ == "__main__":
    sys.exit(main())
