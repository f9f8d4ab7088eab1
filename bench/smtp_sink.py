#!/usr/bin/env python3
"""A counting SMTP sink, and the bare SMTP send rate the delivery benchmark compares against.

The sink (aiosmtpd) accepts every message and only counts messages and bytes; nothing is
stored. Answering ``NOOP`` with ``250 count=N bytes=M``, it can be asked for its counts over
SMTP, also when it runs in another process.

The bare rate is what the transport alone achieves: pre-built messages sent through
`SmtpPool` as fast as it goes, no database, no rendering. The delivery worker's throughput is
judged against it.

Run from the repository root with the project's venv:

    .venv/bin/python bench/smtp_sink.py --port 2525      # a sink; prints its counts every 5 s
    .venv/bin/python bench/smtp_sink.py --bench          # the bare rate: 20,000 messages over
                                                         # 4 connections, figure on the last line

For `--bench` the sink runs in a child process, so that it does not share the interpreter
lock with the sending side (``--in-process`` keeps it in a thread instead). Everything
listens on 127.0.0.1 only.

As a module (``bench/`` on sys.path, as for any script in it):

    from smtp_sink import bare_send_rate, build_message, spawn_sink, start_sink

    with start_sink(0) as sink:              # a thread in this process; sink.count, sink.url
        ...
    with spawn_sink(0) as sink:              # a child process; same interface
        rate = asyncio.run(bare_send_rate(sink.url, 4, 20_000, build_message()))
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Run as a script: make the mailer package importable.
    sys.path.insert(0, str(ROOT))

from mailer.delivery.transport import Outcome, SmtpPool  # noqa: E402
from mailer.devtools.capture import SmtpController  # noqa: E402
from mailer.smtp_url import SmtpSettings  # noqa: E402

HOST = "127.0.0.1"
DEFAULT_PORT = 2525
START_TIMEOUT = 30.0
SENDER = "bench@shop.example"
_COUNTS = re.compile(r"count=(\d+) bytes=(\d+)")


# --------------------------------------------------------------------------- the sink


class _CountingHandler:
    """Counts on the sink's loop thread; readers elsewhere see plain ints (atomic reads)."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 OK"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        return f"250 count={self.count} bytes={self.bytes}"


class Sink:
    """A counting sink on a thread of this process. Use start_sink()."""

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self._handler = _CountingHandler()
        self._controller = SmtpController(
            self._handler,
            hostname=host,
            port=port,
            server_hostname="sink.bench",  # Not socket.getfqdn(), which may wait on DNS.
            ready_timeout=START_TIMEOUT,
        )
        self.host = host
        self._running = False

    def start(self) -> Sink:
        """Listen; return once the sink answers."""
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Stop listening; idempotent."""
        if self._running:
            self._running = False
            self._controller.stop()

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._controller.port)

    @property
    def url(self) -> str:
        """``smtp://host:port`` for SmtpSettings.from_url / MAILER_SMTP_URL."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        """Messages received so far."""
        return self._handler.count

    @property
    def bytes(self) -> int:
        """Message bytes received so far (DATA content, after dot-unstuffing)."""
        return self._handler.bytes

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sink(port: int = 0, host: str = HOST) -> Sink:
    """Start a counting sink on a thread of this process (port 0: a free port)."""
    return Sink(host, port).start()


def sink_counts(host: str, port: int, timeout: float = 30.0) -> tuple[int, int]:
    """Ask a running sink, over SMTP, for its (message count, byte count)."""
    with smtplib.SMTP(host, port, local_hostname="bench.client", timeout=timeout) as client:
        code, reply = client.noop()
    match = _COUNTS.search(reply.decode())
    if code != 250 or match is None:
        raise RuntimeError(f"not a counting sink at {host}:{port}: {code} {reply!r}")
    return int(match.group(1)), int(match.group(2))


class SinkProcess:
    """A counting sink in a child process (this script); same interface as Sink."""

    def __init__(self, host: str = HOST, port: int = 0) -> None:
        self.host = host
        command = [sys.executable, str(Path(__file__).resolve()), "--host", host]
        command += ["--port", str(port), "--interval", "0"]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        # The child's first line is "listening on smtp://HOST:PORT", written once it answers.
        line = self._process.stdout.readline()
        found = re.search(r":(\d+)\s*$", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the sink process did not start (it said {line!r})")
        self.port = int(found.group(1))

    @property
    def url(self) -> str:
        """``smtp://host:port`` for SmtpSettings.from_url / MAILER_SMTP_URL."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        """Messages received so far (asked over SMTP)."""
        return sink_counts(self.host, self.port)[0]

    @property
    def bytes(self) -> int:
        """Message bytes received so far (asked over SMTP)."""
        return sink_counts(self.host, self.port)[1]

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s); idempotent."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def spawn_sink(port: int = 0, host: str = HOST) -> SinkProcess:
    """Start a counting sink in a child process (port 0: a free port)."""
    return SinkProcess(host, port)


# --------------------------------------------------------------------------- the bare rate


def build_message(size: int = 4096) -> bytes:
    """A newsletter-like message (text and HTML alternatives) of about `size` bytes."""
    filler = "Our new autumn catalogue is here, with a few records we think you will like. "
    text_body = (filler * (size // 2 // len(filler) + 1))[: size // 2]
    html_body = f"<html><body><p>{text_body}</p></body></html>"
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = "Music Store <news@shop.example>"
    message["To"] = "reader@example.org"
    message["Subject"] = "Autumn news from the Music Store"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="shop.example")
    message["List-Unsubscribe"] = "<https://shop.example/unsubscribe/bench-token>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text_body)
    message.add_alternative(html_body, subtype="html")
    return message.as_bytes()


async def bare_send_rate(
    url: str, connections: int, n_messages: int, prebuilt_message: bytes
) -> float:
    """Send `n_messages` copies of `prebuilt_message` through an SmtpPool of `connections`
    to `url` (one recipient each, `connections` sends in flight); answer messages per second.

    The clock runs from the first send to the last answer (connection set-up included, the
    final QUITs not). Raises RuntimeError if any send was not SENT.
    """
    pool = SmtpPool(SmtpSettings.from_url(url), connections)
    numbers = iter(range(n_messages))  # Shared: each sender takes the next number.
    failed: list[Any] = []

    async def sender() -> None:
        for number in numbers:
            result = await pool.send(SENDER, f"reader{number}@sink.example", prebuilt_message)
            if result.outcome is not Outcome.SENT:
                failed.append(result)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    if failed:
        raise RuntimeError(f"{len(failed)} of {n_messages} sends failed; first: {failed[0]}")
    return n_messages / elapsed


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=HOST, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 = any free port"
    )
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between count lines; 0 = none"
    )
    parser.add_argument("--bench", action="store_true", help="measure the bare send rate")
    parser.add_argument("--messages", type=int, default=20_000, help="for --bench")
    parser.add_argument("--connections", type=int, default=4, help="for --bench")
    parser.add_argument("--size", type=int, default=4096, help="message bytes, for --bench")
    parser.add_argument(
        "--in-process", action="store_true", help="for --bench: sink on a thread, not a process"
    )
    return parser.parse_args(argv)


def run_sink(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, printing the counts every `args.interval` seconds."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with start_sink(args.port, args.host) as sink:
        print(f"listening on {sink.url}", flush=True)
        last_count, last_time = 0, time.monotonic()
        while not stopping.wait(args.interval if args.interval > 0 else None):
            now, count = time.monotonic(), sink.count
            rate = (count - last_count) / (now - last_time)
            print(f"count={count} bytes={sink.bytes} rate={rate:.0f}/s", flush=True)
            last_count, last_time = count, now
        print(f"count={sink.count} bytes={sink.bytes}", flush=True)


def run_bench(args: argparse.Namespace) -> None:
    """Measure and print the bare send rate; the figure is the last line."""
    message = build_message(args.size)
    sink: Sink | SinkProcess = (
        start_sink(0, args.host) if args.in_process else spawn_sink(0, args.host)
    )
    with sink:
        where = "a thread of this process" if args.in_process else "a child process"
        print(f"sink: {sink.url} ({where})")
        print(
            f"sending {args.messages} messages of {len(message)} bytes "
            f"over {args.connections} connections"
        )
        rate = asyncio.run(bare_send_rate(sink.url, args.connections, args.messages, message))
        received = sink.count
    if received != args.messages:
        raise SystemExit(f"the sink counted {received} messages, not {args.messages}")
    print(f"sink counted {received} messages")
    print(f"bare send rate: {rate:.0f} msg/s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bench:
        run_bench(args)
    else:
        run_sink(args)


if __name__ == "__main__":
    main()
