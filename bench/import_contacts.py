#!/usr/bin/env python3
"""Import throughput: `flask --app wsgi mailer import` of a generated CSV file, in rows/s.

One run of this script:

1. creates a fresh database (``--database postgres``, the default: a scratch database,
   default ``mailer_bench_import``, dropped first if left over and dropped again at the end;
   ``sqlite``: a temporary file) and migrates it with the project's own migrations, then
   makes one topic (double opt-in, as most shops' lists are);
2. writes a CSV file of N rows (default 1,000,000): ``email,first_name,country,city``, the
   addresses spread over a few hundred domains as a shop's list is, with a few bad rows
   among them (one in 10,000: a bad address, and a card number) so that their reporting is
   part of the figure. Setup, not measured;
3. runs the real ``flask --app wsgi mailer import FILE --topic ... --source ...`` as a child
   process and times it from start to exit (the process's start, the line count for the
   progress, the parsing and every batch included). Its standard error (progress, bad rows)
   goes to a file; its summary line is printed. The CPU seconds of the import process and
   of the PostgreSQL backends serving it are read meanwhile (from ``/proc``), and printed
   per row: on a shared machine they say more than the wall time;
4. with ``--again`` (the default), runs the same import a second time: every address is
   then known and subscribed, so nothing is written (the "safe to run twice" case);
5. prints how busy the machine was meanwhile (the CPU share other processes took: on a
   shared machine the figures move with it) and, last, rows/s of the first import.

Run with the project's venv from the repository root:

    .venv/bin/python bench/import_contacts.py [--rows 1000000] [--database postgres|sqlite]
        [--again | --no-again] [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432]
        [--pg-database mailer_bench_import] [--code DIR]

``--code DIR`` runs the command of another source tree against the same setup, e.g. the
starting code of a change: ``git archive REV | tar -x -C DIR`` (``python -m flask`` imports
``mailer`` from DIR, its working directory).

Exit status: 0 when the benchmark ran (whatever the figures), 2 when it could not run, 130
when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import delivery  # bench/ is on sys.path when this runs as a script
from delivery import (
    ROOT,
    BenchError,
    busy_pct,
    cpu_times,
    database_backend_cpu,
    redact,
    run_bench,
)

TOPIC_SLUG = "news"
SOURCE = "shop checkout, 2026"
DOMAINS = [f"mail{i}.example.com" for i in range(300)] + [
    "gmail.com", "web.de", "gmx.de", "outlook.com", "yahoo.com", "t-online.de"]
COUNTRIES = ["DE", "AT", "CH", "FR", "NL", "IT", "ES", "SE", "PL", "DK"]
CITIES = ["Berlin", "Wien", "Zürich", "Paris", "Amsterdam", "Roma", "Madrid", "Malmö"]
BAD_EVERY = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--again", action=argparse.BooleanOptionalAction, default=True,
                        help="run the same import a second time (default: yes)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (a database is created on it)")
    parser.add_argument("--pg-database", default="mailer_bench_import")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the source tree whose `mailer import` runs (default: this one); "
                             "e.g. the starting code: git archive REV | tar -x -C DIR")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    return args


def write_csv(path: Path, rows: int) -> int:
    """N rows of a shop's list; how many of them are bad."""
    pick = random.Random(7)
    bad = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "country", "city"])
        for i in range(rows):
            first = f"Reader{i}"
            if i % BAD_EVERY == BAD_EVERY - 1:
                bad += 1
                if i % (2 * BAD_EVERY) == BAD_EVERY - 1:
                    writer.writerow([f"reader{i}-at-nowhere", first, "DE", "Berlin"])
                else:
                    writer.writerow([f"reader{i}@gmail.com", first, "4111 1111 1111 1111", ""])
                continue
            writer.writerow([f"reader.{i}@{pick.choice(DOMAINS)}", first,
                             pick.choice(COUNTRIES), pick.choice(CITIES)])
    return bad


@dataclass
class Run:
    label: str
    seconds: float
    summary: str
    others_pct: float  # share of the machine that other processes took meanwhile
    import_cpu: float  # CPU seconds of the import process (all its threads)
    database_cpu: float  # CPU seconds of the PostgreSQL backends serving it (0 on SQLite)


def run_import(label: str, env: dict[str, str], path: Path, workdir: Path, code: Path) -> Run:
    """The real command, timed from its start to its exit; its CPU and its database
    backends' CPU read meanwhile (a backend's ends with the process)."""
    log = workdir / f"import-{label}.stderr"
    database_url = env["MAILER_DATABASE_URL"]
    before_cpu = cpu_times()
    before_own = _children_cpu()
    backends_before = set(database_backend_cpu(database_url))
    backend_cpu: dict[int, float] = {}
    started = time.perf_counter()
    with log.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "mailer", "import", str(path),
             "--topic", TOPIC_SLUG, "--source", SOURCE],
            cwd=code, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        while child.poll() is None:
            for pid, seconds in database_backend_cpu(database_url).items():
                if pid not in backends_before:
                    backend_cpu[pid] = max(seconds, backend_cpu.get(pid, 0.0))
            time.sleep(0.5)
        stdout = child.stdout.read() if child.stdout else ""
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise BenchError(f"the import failed ({child.returncode}): "
                         f"{log.read_text()[-2000:]}")
    machine = busy_pct(before_cpu, cpu_times())
    import_cpu = _children_cpu() - before_own
    ours = 100.0 * (import_cpu + sum(backend_cpu.values())) / (seconds * (os.cpu_count() or 1))
    return Run(label, seconds, stdout.strip().splitlines()[-1], max(machine - ours, 0.0),
               import_cpu, sum(backend_cpu.values()))


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def bench(args: argparse.Namespace) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="mailer-bench-import-") as workdir_name:
        workdir = Path(workdir_name)
        if args.database == "sqlite":
            database = delivery.sqlite_database(workdir)
        else:
            database = delivery.postgres_database(args.pg_url, args.pg_database)
        with database as database_url:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
            env.update(MAILER_ENV="development", MAILER_DATABASE_URL=database_url,
                       MAILER_SECRET_KEYS=secrets.token_urlsafe(32),
                       MAILER_ADDRESS_HASH_KEY=secrets.token_urlsafe(32))
            app = delivery.make_app(env)
            import flask_migrate

            from mailer.extensions import db
            from mailer.topics.services import create_topic

            with app.app_context():
                flask_migrate.upgrade(directory=str(ROOT / "migrations"))
                create_topic(TOPIC_SLUG, "News", "", True, True)
                db.session.commit()
                db.engine.dispose()
            path = workdir / "contacts.csv"
            started = time.perf_counter()
            bad = write_csv(path, args.rows)
            print(f"database: {args.database} ({redact(database_url)}); wrote {args.rows:,} "
                  f"rows ({bad} bad) in {time.perf_counter() - started:.1f} s "
                  f"(setup, not measured)", flush=True)
            runs = [run_import("first", env, path, workdir, args.code)]
            print_run(runs[-1], args.rows)
            if args.again:
                runs.append(run_import("again", env, path, workdir, args.code))
                print_run(runs[-1], args.rows)
            return runs


def print_run(run: Run, rows: int) -> None:
    print(f"{run.label} import: {run.seconds:.1f} s, {rows / run.seconds:,.0f} rows/s; "
          f"CPU per row: import process {1e6 * run.import_cpu / rows:.0f} us, database "
          f"backends {1e6 * run.database_cpu / rows:.0f} us; other processes took "
          f"{run.others_pct:.0f}% of the machine meanwhile\n"
          f"  {run.summary}", flush=True)


def report(args: argparse.Namespace, runs: list[Run]) -> int:
    first = runs[0]
    print(f"machine: {os.cpu_count()} CPUs, shared with other sessions' jobs "
          f"(others took {first.others_pct:.0f}% during the first import)")
    busiest = max(first.import_cpu, first.database_cpu)
    print(f"CPU-bound ceiling on an otherwise idle machine of 2 CPUs: "
          f"{args.rows / busiest:,.0f} rows/s (rows / the larger of the import's and the "
          f"database's CPU seconds, which overlap; an estimate, not a measurement)")
    print(f"rows/s ({args.database}, {args.rows:,} rows, first import): "
          f"{args.rows / first.seconds:,.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: bench(args), lambda runs: report(args, runs))


if __name__ == "__main__":
    sys.exit(main())
