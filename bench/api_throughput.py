#!/usr/bin/env python3
"""Throughput and latency of the API's busiest requests against GET /healthz, on SQLite and
PostgreSQL.

Endpoints (``--endpoint``, default ``all`` = contacts, messages, unsubscribe):

- ``contacts``: POST /api/v1/contacts, every request a new address;
- ``messages``: POST /api/v1/messages, a transactional ``receipt`` mail to a new address
  each time (rendered at accept, through the consent gate, into the outbox);
- ``unsubscribe``: the RFC 8058 one-click POST /unsubscribe/<token>
  (``List-Unsubscribe=One-Click``, form-encoded, no cookie), each request with the token of
  another pre-created subscriber;
- ``promotional`` (not in ``all``): POST /api/v1/messages, a promotional ``newsletter`` mail
  to one of the pre-created subscribers.

For each database (``--database sqlite|postgres|both``) this script:

1. creates a fresh database: a temporary SQLite file, or a scratch PostgreSQL
   database (default ``mailer_bench``, dropped first if left over, dropped again
   at the end) made through psycopg on the ``postgres`` maintenance database;
2. migrates it (``flask --app wsgi db upgrade``), creates an API key
   (``flask --app wsgi mailer create-api-key``);
3. starts gunicorn (``wsgi:app``) on 127.0.0.1 on a free port, creates a topic
   without double opt-in through ``POST /api/v1/topics`` and, for ``unsubscribe`` and
   ``promotional``, ``--subscribers`` subscribers of it directly in the database (with
   their unsubscribe tokens, made by ``mailer.messages.compose.unsubscribe_token``);
4. for each endpoint: warms it and ``GET /healthz`` up, then runs wrk at a fixed
   concurrency for ``--duration`` seconds per endpoint, split into ``--rounds`` runs that
   alternate between ``GET /healthz`` and the endpoint so that both see the same machine
   (see api_throughput.lua);
5. prints requests/s, p50/p99 latency and the non-2xx count of each endpoint and of its
   healthz rounds, and the ratio endpoint/healthz; the summary table comes last.

gunicorn is stopped, and the scratch database and temporary files removed, at the
end, also on error or Ctrl-C. All traffic stays on 127.0.0.1; every load run is
bounded by its duration.

Run it with the project's venv from the repository root:

    .venv/bin/python bench/api_throughput.py [--database both] [--endpoint all] [--duration 10]

Needs wrk (Debian: ``apt-get install -y wrk``) and, for PostgreSQL, a server on
127.0.0.1:5432 that lets ``postgres`` create databases (``--pg-url`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().with_name("api_throughput.lua")
HOST = "127.0.0.1"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
TOPIC_SLUG = "bench"



@dataclass(frozen=True)
class Endpoint:
    """One endpoint under test: its wrk mode (api_throughput.lua) and its goals."""

    name: str
    label: str
    goal_ratio: float | None = None  # endpoint req/s over healthz req/s, at least
    goal_p99_ms: float | None = None  # the endpoint's p99 latency, at most


# The floors this benchmark checks (issue 14's; see bench/README.md); runs in this order.
ENDPOINTS = {
    "contacts": Endpoint("contacts", "POST /api/v1/contacts", 0.3, 25.0),
    "messages": Endpoint("messages", "POST /api/v1/messages", 0.3, 25.0),
    "promotional": Endpoint("promotional", "POST /api/v1/messages promo"),
    "unsubscribe": Endpoint("unsubscribe", "POST /unsubscribe/<token>", 0.4, 25.0),
}
ALL = ("contacts", "messages", "unsubscribe")

WRK_INSTALL_HINT = (
    "wrk is not installed. Install it with:\n"
    "    apt-get update && apt-get install -y wrk      (Debian/Ubuntu, as root)\n"
    "    brew install wrk                              (macOS)\n"
    "then run this benchmark again."
)


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why."""


# --------------------------------------------------------------------------- options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "The API's busiest requests vs GET /healthz under one gunicorn config, "
            "on SQLite and/or PostgreSQL."
        )
    )
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--endpoint", type=endpoint_list, default=list(ALL),
                        metavar="|".join([*ENDPOINTS, "all"]),
                        help="what to measure, each against GET /healthz: one name, several "
                             "separated by commas, or all (contacts, messages, unsubscribe; "
                             "the default)")
    parser.add_argument("--subscribers", type=int, default=20_000,
                        help="subscribers created directly in the database for unsubscribe "
                             "and promotional (default 20000); one-click requests use each "
                             "one's token once, then start over (repeats unsubscribe nobody)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of measured load per endpoint (default 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="split each endpoint's --duration into this many runs, "
                             "alternating healthz and the endpoint, so that both see the same "
                             "machine (default 5)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of unmeasured load per endpoint before measuring (default 3)")
    parser.add_argument("--connections", type=int, default=2,
                        help="wrk connections, i.e. requests in flight (default 2: one per "
                             "worker; more only queues)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1; the load generator shares the 2 cores)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="gunicorn threads per worker (default 1; >1 means gthread)")
    parser.add_argument("--worker-class", default=None,
                        help="gunicorn worker class (default: gthread when --threads > 1, "
                             "else sync)")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL without a database name "
                             "(default postgresql+psycopg://postgres@127.0.0.1:5432)")
    parser.add_argument("--pg-database", default="mailer_bench",
                        help="scratch database created and dropped (default mailer_bench; "
                             "its name must contain 'bench')")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results as JSON to this file "
                             "(bench/results/ is git-ignored)")
    parser.add_argument("--py-spy", dest="py_spy", type=Path, default=None, metavar="DIR",
                        help="after measuring each endpoint, record each gunicorn worker "
                             "with py-spy during an extra, unmeasured run of it, as flame "
                             "graphs DIR/<database>-<endpoint>-<pid>.svg (py-spy must be "
                             "installed: .venv/bin/pip install py-spy)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a goal is missed (see bench/README.md)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be > 0 and --warmup >= 0")
    if not 1 <= args.rounds <= args.duration:
        parser.error("--rounds must be between 1 and --duration (each run lasts >= 1 s)")
    if args.duration > 600 or args.warmup > 120:
        parser.error("--duration is at most 600 s and --warmup at most 120 s")
    if args.connections < 1 or args.wrk_threads < 1 or args.connections < args.wrk_threads:
        parser.error("--connections and --wrk-threads must be >= 1, connections >= threads")
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be >= 1")
    if not 1 <= args.subscribers <= 1_000_000:
        parser.error("--subscribers must be between 1 and 1000000")
    if args.worker_class is None:
        args.worker_class = "gthread" if args.threads > 1 else "sync"
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.pg_database) or (
        "bench" not in args.pg_database
    ):
        parser.error("--pg-database must be a plain lower-case name containing 'bench' "
                     "(it is dropped)")
    host = urlsplit(args.pg_url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        parser.error("--pg-url must point at this machine (127.0.0.1, localhost or ::1)")
    return args


def endpoint_list(text: str) -> list[str]:
    """`--endpoint`: names separated by commas, or `all`; returned in the running order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(ALL)
    unknown = sorted(names - set(ENDPOINTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown endpoint {', '.join(unknown) or text!r}; choose from "
            f"{', '.join([*ENDPOINTS, 'all'])}")
    return [name for name in ENDPOINTS if name in names]


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def gunicorn_args(args: argparse.Namespace) -> list[str]:
    """The gunicorn options under test (the same for both endpoints and both databases)."""
    options = ["-w", str(args.workers), "-k", args.worker_class]
    if args.threads > 1 or args.worker_class == "gthread":
        options += ["--threads", str(args.threads)]
    return options


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def run(cmd: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    """Run a command in the repository root; return its stdout or raise BenchError."""
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} took more than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def http(method: str, url: str, *, body: Any = None, key: str | None = None,
         timeout: float = 10.0, form: str | None = None) -> tuple[int, str]:
    """One request; `body` goes as JSON, `form` as an already encoded form."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if form is not None:
        data = form.encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    # Loopback only: no proxy from the environment may be used.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat (zeros where unavailable)."""
    try:
        fields_ = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields_[3] + (fields_[4] if len(fields_) > 4 else 0)
    total = sum(fields_[:8])
    return total - idle, total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the given processes (Linux /proc; else 0)."""
    total = 0
    for pid in pids:
        with suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields_ = stat[stat.rindex(")") + 2 :].split()
            total += int(fields_[11]) + int(fields_[12])  # utime, stime
    return total / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy the whole machine is, sampled over `seconds` (to warn about a noisy machine)."""
    busy0, total0 = cpu_times()
    time.sleep(seconds)
    busy1, total1 = cpu_times()
    return 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


# --------------------------------------------------------------------------- databases


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    path = workdir / "mailer_bench.db"
    yield f"sqlite:///{path}"
    # The files go with the temporary directory.


def postgres_backend_pids(pg_url: str, name: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to the scratch database (the app's pool)."""
    import psycopg

    with psycopg.connect(_pg_admin_conninfo(pg_url), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def _pg_admin_conninfo(pg_url: str) -> str:
    # psycopg wants a libpq URL: drop SQLAlchemy's "+driver" and aim at the `postgres` database.
    parts = urlsplit(pg_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in {"postgresql", "postgres"}:
        raise BenchError(f"--pg-url must be a postgresql:// URL, got {pg_url!r}")
    return f"postgresql://{parts.netloc}/postgres"


@contextmanager
def postgres_database(pg_url: str, name: str) -> Iterator[str]:
    try:
        import psycopg
        from psycopg import sql
    except ImportError as exc:  # pragma: no cover - psycopg is an install requirement
        raise BenchError("psycopg is not installed: run this with the project's venv") from exc

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


# --------------------------------------------------------------------------- gunicorn


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    command: list[str]

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _gunicorn_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True,
                         text=True, timeout=30, check=False).stdout
    return flag in out


@contextmanager
def gunicorn(env: dict[str, str], options: list[str], workdir: Path) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{port}", *options,
               "--graceful-timeout", "5"]
    if _gunicorn_supports("--no-control-socket"):
        # gunicorn >= 24 opens a control socket under ~/.gunicorn; one benchmark needs none.
        command.append("--no-control-socket")
    command.append("wsgi:app")
    log = workdir / f"gunicorn-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, port, log, command)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise BenchError(f"gunicorn exited with {process.returncode}:\n{server.log_tail()}")
            with suppress(OSError):
                status, _ = http("GET", f"{server.base}/healthz", timeout=2)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"gunicorn did not answer /healthz within 30 s:\n"
                                 f"{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM gunicorn's process group (it was started in a session of its own), then SIGKILL."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    endpoint: str
    requests: int
    seconds: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    cpu_busy_pct: float
    command: str = ""
    app_cpu_ms: float = 0.0  # gunicorn workers' CPU time per request
    db_cpu_ms: float | None = None  # PostgreSQL backends' CPU time per request

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        """Responses that were not 2xx, plus requests that got no response (socket errors)."""
        socket_errors = sum(v for k, v in self.socket_errors.items() if k != "status")
        return self.non_2xx + socket_errors


@dataclass
class Round:
    """One wrk run, as printed by api_throughput.lua, with the CPU used meanwhile."""

    requests: int
    seconds: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_us: dict[str, float]
    dist_us: list[tuple[float, float]]
    busy: int  # machine CPU jiffies busy / total during the run
    total: int
    app_cpu_s: float
    db_cpu_s: float
    command: str


@dataclass
class Subscribers:
    """The pre-created subscribers: how many, their unsubscribe tokens (one a line, in the
    order of their numbers), and the next token a one-click run starts from."""

    count: int
    tokens: Path
    next_token: int = 0
    wrapped: bool = False


def wrk(server: Server, mode: str, seconds: float, args: argparse.Namespace, key: str,
        run_id: str, db_pids: list[int] | None = None,
        subscribers: Subscribers | None = None) -> Round:
    """One wrk run of `seconds` (whole seconds, at least 1) against one endpoint.

    `run_id` must be new for every contacts and messages run: the script numbers addresses
    from 1 each time. An unsubscribe run starts at `subscribers.next_token` and moves it on.
    """
    duration = max(1, round(seconds))
    extra: list[str] = []
    if mode in ("unsubscribe", "promotional"):
        if subscribers is None:
            raise BenchError(f"{mode} needs the pre-created subscribers")
        extra = [str(subscribers.tokens), str(subscribers.count),
                 str(subscribers.next_token), str(args.wrk_threads)]
    cmd = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{duration}s",
           "--timeout", "5s", "-s", str(LUA_SCRIPT), server.base, "--", mode, run_id, key,
           TOPIC_SLUG, *extra]
    workers = children_of(server.process.pid)
    app0, db0 = process_cpu_seconds(workers), process_cpu_seconds(db_pids or [])
    busy0, total0 = cpu_times()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk ran more than {duration + 60} s") from exc
    busy1, total1 = cpu_times()
    app1, db1 = process_cpu_seconds(workers), process_cpu_seconds(db_pids or [])
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    data = json.loads(line.split(" ", 1)[1])
    if mode == "unsubscribe" and subscribers is not None:
        # Requests still in flight when wrk stopped took a token too.
        subscribers.next_token += int(data["requests"]) + args.connections
        if subscribers.next_token >= subscribers.count:
            subscribers.wrapped = True
            subscribers.next_token %= subscribers.count
    return Round(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        socket_errors={k: int(v) for k, v in data["errors"].items()},
        latency_us={k: float(v) for k, v in data["latency_us"].items()},
        dist_us=[(float(p), float(v)) for p, v in data["dist_us"]],
        busy=busy1 - busy0,
        total=total1 - total0,
        app_cpu_s=app1 - app0,
        db_cpu_s=db1 - db0,
        command=shlex.join([*cmd[:cmd.index("--") + 3], "<key>",
                            *cmd[cmd.index("--") + 4:]]),
    )


def merged_percentile(rounds: list[Round], pct: float) -> float:
    """A latency percentile (us) over several runs, from each run's percentile points.

    Each run's point at percentile p stands for the requests between the previous point and p,
    so runs weigh by their request counts. Exact for one run; within the points' resolution
    (1 % below p90, 0.1 % to p99, 0.01 % above) otherwise.
    """
    if len(rounds) == 1:
        exact = {50.0: "p50", 90.0: "p90", 99.0: "p99", 100.0: "max"}.get(pct)
        if exact:
            return rounds[0].latency_us[exact]
    weighted: list[tuple[float, float]] = []
    for r in rounds:
        previous = 0.0
        for p, value in r.dist_us:
            weighted.append((value, r.requests * (p - previous) / 100.0))
            previous = p
    weighted.sort()
    total = sum(weight for _, weight in weighted)
    if not total:
        return 0.0
    target, seen = total * pct / 100.0, 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= target - 1e-9:
            return value
    return weighted[-1][0]


def combine(endpoint: str, rounds: list[Round], with_db: bool) -> LoadResult:
    """One endpoint's figures over all its measured runs."""
    requests = sum(r.requests for r in rounds)
    statuses: dict[str, int] = {}
    socket_errors: dict[str, int] = {}
    for r in rounds:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r.socket_errors.items():
            socket_errors[k] = socket_errors.get(k, 0) + v
    per_request = max(requests, 1)
    mean = sum(r.latency_us["mean"] * r.requests for r in rounds) / per_request
    latency_us = {
        "min": min(r.latency_us["min"] for r in rounds),
        "mean": mean,
        "p50": merged_percentile(rounds, 50.0),
        "p90": merged_percentile(rounds, 90.0),
        "p99": merged_percentile(rounds, 99.0),
        "max": max(r.latency_us["max"] for r in rounds),
    }
    busy, total = sum(r.busy for r in rounds), sum(r.total for r in rounds)
    return LoadResult(
        endpoint=endpoint,
        requests=requests,
        seconds=sum(r.seconds for r in rounds),
        statuses=statuses,
        socket_errors=socket_errors,
        latency_ms={k: v / 1000.0 for k, v in latency_us.items()},
        cpu_busy_pct=100.0 * busy / total if total else 0.0,
        command=rounds[0].command,
        app_cpu_ms=1000.0 * sum(r.app_cpu_s for r in rounds) / per_request,
        db_cpu_ms=1000.0 * sum(r.db_cpu_s for r in rounds) / per_request if with_db else None,
    )


# --------------------------------------------------------------------------- one database


@dataclass
class Pair:
    """One endpoint's figures and those of the healthz rounds run between its own."""

    endpoint: Endpoint
    healthz: LoadResult
    load: LoadResult

    @property
    def ratio(self) -> float:
        return self.load.rps / self.healthz.rps if self.healthz.rps else 0.0

    @property
    def meets_goals(self) -> bool:
        goal = self.endpoint
        return ((goal.goal_ratio is None or self.ratio >= goal.goal_ratio)
                and (goal.goal_p99_ms is None
                     or self.load.latency_ms["p99"] <= goal.goal_p99_ms)
                and self.load.errors == 0 and self.healthz.errors == 0)


@dataclass
class DatabaseResult:
    database: str
    pairs: list[Pair]
    notes: list[str] = field(default_factory=list)

    @property
    def meets_goals(self) -> bool:
        return all(pair.meets_goals for pair in self.pairs)


def bench_env(url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MAILER_DATABASE_URL": url,
        "MAILER_SECRET_KEYS": secrets.token_urlsafe(32),
        "MAILER_ENV": "production",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Production refuses to start without its own address-hash key (README, Deploying).
        "MAILER_ADDRESS_HASH_KEY": secrets.token_urlsafe(32),
    }
    # Mail needs a sender and, when promotional, a postal address.
    env.setdefault("MAILER_FROM", "Bench Shop <bench@example.com>")
    env.setdefault("MAILER_POSTAL_ADDRESS", "1 Benchmark Street, 10115 Berlin")
    # Production also wants https links and a named relay; no mail is sent here (no worker runs).
    env.setdefault("MAILER_BASE_URL", "https://shop.example")
    env.setdefault("MAILER_SMTP_URL", "smtp://127.0.0.1:2525")
    return env


RECEIPT = {"order_number": "B-1", "total": "€61.50",
           "items": [{"qty": 1, "name": "Guitar strings", "price": "€12.50"},
                     {"qty": 2, "name": "Capo", "price": "€24.50"}]}
NEWSLETTER = {"headline": "Spring sale", "intro": "Strings half price this week."}


def probe(kind: str, server: Server, key: str, name: str,
          subscribers: Subscribers | None) -> None:
    """One request of the endpoint before any load: it must answer as the load expects."""
    if name == "contacts":
        status, body = http("POST", f"{server.base}/api/v1/contacts", key=key,
                            body={"email": "bench-probe@example.com", "topics": [TOPIC_SLUG],
                                  "source": "bench",
                                  "attributes": {"country": "DE", "plan": "p0"}})
        ok = status == 201 and '"subscribed"' in body
    elif name == "messages":
        status, body = http("POST", f"{server.base}/api/v1/messages", key=key,
                            body={"to": "bench-probe@example.com", "template": "receipt",
                                  "category": "transactional", "data": RECEIPT})
        ok = status == 202 and '"queued"' in body
    elif name == "promotional":
        assert subscribers is not None
        status, body = http("POST", f"{server.base}/api/v1/messages", key=key,
                            body={"to": f"bench-sub-{subscribers.count - 1}@example.com",
                                  "template": "newsletter", "category": "promotional",
                                  "topic": TOPIC_SLUG, "data": NEWSLETTER})
        ok = status == 202 and '"queued"' in body
    else:
        # The first subscriber's token, form-encoded as mail providers send it; the load
        # goes on from the second.
        assert subscribers is not None
        with subscribers.tokens.open() as lines:
            token = lines.readline().strip()
        status, body = http("POST", f"{server.base}/unsubscribe/{token}",
                            form="List-Unsubscribe=One-Click")
        ok = status == 200
        subscribers.next_token = 1
    if not ok:
        raise BenchError(f"[{kind}] probe of {ENDPOINTS[name].label} answered {status}: "
                         f"{body[:500]}")


def seed_subscribers(env: dict[str, str], workdir: Path, count: int) -> Subscribers:
    """Create `count` subscribers of the bench topic directly in the database (in another
    process, with the app's own models) and write their unsubscribe tokens to a file."""
    tokens = workdir / "unsubscribe-tokens.txt"
    code = ("import sys; sys.path.insert(0, 'bench'); import api_throughput; "
            "api_throughput.create_subscribers(int(sys.argv[1]), sys.argv[2], sys.argv[3])")
    run([sys.executable, "-c", code, str(count), TOPIC_SLUG, str(tokens)], env, 900,
        "creating the subscribers")
    return Subscribers(count, tokens)


def create_subscribers(count: int, topic_slug: str, tokens_path: str) -> None:
    """In a process of its own (seed_subscribers): contacts bench-sub-<n>@example.com for n
    below `count`, each subscribed to the topic with its consent event, as an import would
    leave them; their unsubscribe tokens, one a line, go to `tokens_path`."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert, literal, select

    from mailer import addresses, create_app
    from mailer.consent.models import ConsentEvent, Subscription
    from mailer.contacts.models import Contact
    from mailer.database import utcnow
    from mailer.extensions import db
    from mailer.messages.compose import unsubscribe_token
    from mailer.topics.models import Topic

    app = create_app()
    with app.app_context():
        topic_id = db.session.scalar(select(Topic.id).where(Topic.slug == topic_slug))
        if topic_id is None:
            raise SystemExit(f"no topic {topic_slug!r}")
        now = utcnow()
        contacts = Contact.__table__
        hashes = []
        for start in range(0, count, 2000):
            rows = []
            for n in range(start, min(start + 2000, count)):
                email = f"bench-sub-{n}@example.com"
                hashes.append(addresses.keyed_hash(email))
                rows.append({"email": email, "address_hash": hashes[-1], "attributes": {},
                             "source": "bench", "partner_sharing": False,
                             "created_at": now, "updated_at": now})
            db.session.execute(insert(contacts), rows)
        seeded = contacts.c.email.like("bench-sub-%@example.com")
        created_at = contacts.c.created_at
        db.session.execute(insert(Subscription.__table__).from_select(
            ["contact_id", "topic_id", "state", "created_at", "updated_at"],
            select(contacts.c.id, literal(topic_id), literal("subscribed"), created_at,
                   created_at).where(seeded)))
        db.session.execute(insert(ConsentEvent.__table__).from_select(
            ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "note",
             "created_at"],
            select(contacts.c.id, contacts.c.address_hash, literal("topic"), literal(topic_id),
                   literal("subscribed"), literal("import"), literal("bench"),
                   created_at).where(seeded)))
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # As autovacuum leaves a table some time after a bulk load: otherwise its vacuum
            # and analyze of these rows start during the measured runs, and take their CPU.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            # The bulk load's write-ahead log (some hundred thousand pages) copied into the
            # database file now, as the load's own checkpoints would have, rather than by the
            # web processes' during the measured runs.
            from mailer.database import truncate_sqlite_wal

            truncate_sqlite_wal(db.engine, wait_seconds=120)
        with open(tokens_path, "w") as out:
            for address_hash in hashes:
                out.write(unsubscribe_token(address_hash, topic_id) + "\n")
        db.engine.dispose()


def bench_endpoint(kind: str, args: argparse.Namespace, server: Server, key: str,
                   name: str, subscribers: Subscribers | None,
                   db_pids: list[int] | None) -> Pair:
    endpoint = ENDPOINTS[name]
    run_tag = secrets.token_hex(3)
    if args.warmup > 0:
        print(f"[{kind}] {name}: warm-up {args.warmup:g} s of healthz and of {endpoint.label}",
              flush=True)
        wrk(server, "healthz", args.warmup, args, key, f"w{run_tag}")
        wrk(server, name, args.warmup, args, key, f"w{run_tag}", subscribers=subscribers)
    slice_s = max(1, round(args.duration / args.rounds))
    print(f"[{kind}] {name}: measuring {args.rounds} x {slice_s} s each, alternating healthz "
          f"and {endpoint.label}", flush=True)
    healthz_rounds: list[Round] = []
    rounds: list[Round] = []
    for i in range(args.rounds):
        healthz_rounds.append(wrk(server, "healthz", slice_s, args, key, f"m{run_tag}r{i}",
                                  db_pids))
        rounds.append(wrk(server, name, slice_s, args, key, f"m{run_tag}r{i}", db_pids,
                          subscribers))
    healthz = combine(f"GET /healthz ({name})", healthz_rounds, kind == "postgres")
    load = combine(endpoint.label, rounds, kind == "postgres")
    print_detail(kind, healthz)
    print_detail(kind, load)
    if args.py_spy is not None:
        # A separate, unmeasured run: profiling must not touch the figures.
        spies = start_py_spy(args, kind, name, server, slice_s * args.rounds)
        try:
            wrk(server, name, slice_s * args.rounds, args, key, f"p{run_tag}",
                subscribers=subscribers)
        finally:
            finish_py_spy(spies)
    return Pair(endpoint, healthz, load)


def bench_database(kind: str, args: argparse.Namespace) -> DatabaseResult:
    notes: list[str] = []
    pairs: list[Pair] = []
    with tempfile.TemporaryDirectory(prefix=f"mailer-bench-{kind}-") as tmp:
        workdir = Path(tmp)
        database = (sqlite_database(workdir) if kind == "sqlite"
                    else postgres_database(args.pg_url, args.pg_database))
        with database as url:
            env = bench_env(url)
            print(f"[{kind}] database {redact(url)}: migrating", flush=True)
            flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
            run([*flask, "db", "upgrade"], env, 180, "flask db upgrade")
            out = run([*flask, "mailer", "create-api-key", "bench"], env, 60, "create-api-key")
            key = out.strip().splitlines()[-1].strip()
            with gunicorn(env, gunicorn_args(args), workdir) as server:
                print(f"[{kind}] gunicorn on {server.base}: "
                      f"{shlex.join(server.command[2:])}", flush=True)
                status, body = http("POST", f"{server.base}/api/v1/topics", key=key,
                                    body={"slug": TOPIC_SLUG, "name": "Benchmark",
                                          "double_opt_in": False})
                if status != 201:
                    raise BenchError(f"POST /api/v1/topics answered {status}: {body}")
                subscribers = None
                if {"unsubscribe", "promotional"} & set(args.endpoint):
                    print(f"[{kind}] creating {args.subscribers} subscribers and their "
                          "unsubscribe tokens", flush=True)
                    subscribers = seed_subscribers(env, workdir, args.subscribers)
                for name in args.endpoint:
                    probe(kind, server, key, name, subscribers)
                db_pids = (postgres_backend_pids(args.pg_url, args.pg_database)
                           if kind == "postgres" else None)
                idle_busy = machine_busy_pct(1.0)
                if idle_busy > 10:
                    notes.append(f"the machine was {idle_busy:.0f}% busy before the load "
                                 "(other processes): figures are noisy")
                    print(f"[{kind}] warning: {notes[-1]}", flush=True)
                for name in args.endpoint:
                    if kind == "postgres":  # the pool may have opened more connections
                        db_pids = postgres_backend_pids(args.pg_url, args.pg_database)
                    pairs.append(bench_endpoint(kind, args, server, key, name, subscribers,
                                                db_pids))
                if subscribers is not None and subscribers.wrapped:
                    notes.append(f"the {subscribers.count} unsubscribe tokens were used up "
                                 "and started over: later one-click requests repeated an "
                                 "unsubscribe (the cheaper no-op path); raise --subscribers")
                if server.process.poll() is not None:
                    raise BenchError(f"gunicorn died during the run:\n{server.log_tail()}")
    return DatabaseResult(kind, pairs, notes)


def start_py_spy(args: argparse.Namespace, kind: str, name: str, server: Server,
                 seconds: int) -> list[subprocess.Popen[bytes]]:
    """With --py-spy DIR: one py-spy per gunicorn worker, for an extra run of `name`."""
    if args.py_spy is None:
        return []
    spy = py_spy_path()
    if spy is None:
        raise BenchError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in children_of(server.process.pid):
        out = args.py_spy / f"{kind}-{name}-{pid}.svg"
        spies.append(subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "500", "--duration", str(seconds),
             "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        print(f"[{kind}] py-spy recording worker {pid} -> {out}", flush=True)
    time.sleep(0.5)  # let py-spy attach before the load starts
    return spies


def finish_py_spy(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait(timeout=5)


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


# --------------------------------------------------------------------------- output


def print_detail(kind: str, r: LoadResult) -> None:
    lat = r.latency_ms
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items())) or "none"
    sock = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v and k != "status")
    db_cpu = "" if r.db_cpu_ms is None else f" + PostgreSQL {r.db_cpu_ms:.2f} ms"
    print(f"[{kind}] {r.endpoint}: {r.requests} requests in {r.seconds:.2f} s = {r.rps:.1f} req/s; "
          f"latency ms min {lat['min']:.2f} mean {lat['mean']:.2f} p50 {lat['p50']:.2f} "
          f"p90 {lat['p90']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f}; "
          f"statuses {{{statuses}}}; socket errors: {sock or 'none'}; "
          f"machine CPU busy {r.cpu_busy_pct:.0f}%; CPU per request: gunicorn "
          f"{r.app_cpu_ms:.2f} ms{db_cpu}", flush=True)


def print_summary(results: list[DatabaseResult], args: argparse.Namespace) -> None:
    slice_s = max(1, round(args.duration / args.rounds))
    config = (f"gunicorn {shlex.join(gunicorn_args(args))} | wrk -t{args.wrk_threads} "
              f"-c{args.connections} | {args.rounds} x {slice_s} s per endpoint, alternating "
              f"with healthz, after {args.warmup:g} s warm-up | {os.cpu_count()} CPUs")
    print()
    print(f"== api_throughput: {config}")
    header = (f"{'database':<9} {'endpoint':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'errors':>7} {'app CPU ms/req':>15} {'db CPU ms/req':>14}")
    print(header)
    print("-" * len(header))
    for res in results:
        for pair in res.pairs:
            for r in (pair.healthz, pair.load):
                db_cpu = "-" if r.db_cpu_ms is None else f"{r.db_cpu_ms:.2f}"
                print(f"{res.database:<9} {r.endpoint:<30} {r.rps:>9.1f} "
                      f"{r.latency_ms['p50']:>8.2f} {r.latency_ms['p99']:>8.2f} "
                      f"{r.errors:>7d} {r.app_cpu_ms:>15.2f} {db_cpu:>14}")
    print("-" * len(header))
    for res in results:
        for pair in res.pairs:
            goal = pair.endpoint
            ratio_goal = (f" (goal >= {goal.goal_ratio:g})" if goal.goal_ratio is not None
                          else " (no goal)")
            p99 = pair.load.latency_ms["p99"]
            p99_goal = f" (goal <= {goal.goal_p99_ms:g})" if goal.goal_p99_ms is not None else ""
            verdict = "PASS" if pair.meets_goals else "MISS"
            print(f"{res.database:<9} {goal.name:<12} ratio {goal.name}/healthz "
                  f"{pair.ratio:.3f}{ratio_goal}; p99 {p99:.2f} ms{p99_goal}; errors "
                  f"{pair.load.errors + pair.healthz.errors} -> {verdict}")
        for note in res.notes:
            print(f"{res.database:<9} note: {note}")


def write_json(path: Path, results: list[DatabaseResult], args: argparse.Namespace) -> None:
    def load(r: LoadResult) -> dict[str, Any]:
        return {"rps": round(r.rps, 2), "requests": r.requests, "seconds": round(r.seconds, 3),
                "latency_ms": r.latency_ms, "statuses": r.statuses,
                "socket_errors": r.socket_errors, "errors": r.errors,
                "cpu_busy_pct": round(r.cpu_busy_pct, 1), "app_cpu_ms": round(r.app_cpu_ms, 3),
                "db_cpu_ms": None if r.db_cpu_ms is None else round(r.db_cpu_ms, 3),
                "wrk": r.command}

    doc = {
        "gunicorn": gunicorn_args(args),
        "wrk": {"threads": args.wrk_threads, "connections": args.connections},
        "duration_s": args.duration, "rounds": args.rounds, "warmup_s": args.warmup,
        "cpus": os.cpu_count(), "endpoints": args.endpoint, "subscribers": args.subscribers,
        "results": {
            res.database: {
                "endpoints": {
                    pair.endpoint.name: {
                        "label": pair.endpoint.label,
                        "healthz": load(pair.healthz), "load": load(pair.load),
                        "ratio": round(pair.ratio, 4),
                        "goals": {"ratio": pair.endpoint.goal_ratio,
                                  "p99_ms": pair.endpoint.goal_p99_ms},
                        "meets_goals": pair.meets_goals,
                    }
                    for pair in res.pairs
                },
                "meets_goals": res.meets_goals,
                "notes": res.notes,
            }
            for res in results
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _terminate(signum: int, _frame: Any) -> None:
    # Turn SIGTERM/SIGHUP into an exception so every `finally` (gunicorn, database) runs.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results: list[DatabaseResult] = []
    try:
        for kind in kinds:
            results.append(bench_database(kind, args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if results:
            print_summary(results, args)
        return 2
    except KeyboardInterrupt:
        print("interrupted: gunicorn stopped and scratch data removed", file=sys.stderr)
        return 130
    if args.json:
        write_json(args.json, results, args)
    print_summary(results, args)
    if args.check and not all(res.meets_goals for res in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
