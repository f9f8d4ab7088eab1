"""The capture SMTP server of `mailer dev`: accepts every mail and keeps it as a .eml file.

Each message is written to ``DIRECTORY/<id>.eml`` where the id is the UTC receive time
(microseconds) and a random suffix, so ids sort by time and never collide. The envelope is
recorded as trace headers in front of the message, as a delivering MTA would: ``Return-Path``
(the MAIL FROM address) and one ``X-Original-To`` per RCPT TO address. Files appear atomically
(written under a temporary dot-name, then renamed), so a reader never sees half a message.

Development only: it listens on loopback, accepts mail for any address and never relays.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

SUFFIX = ".eml"
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_ID = re.compile(r"(\d{8}T\d{12}Z)-([0-9a-f]{12})")
# Enough to hold the headers of any sane message; the body is never read for the list.
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class CapturedMail:
    """One captured message, as listed: no body, only what a list page shows."""

    id: str
    received_at: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    path: Path
    size: int


def new_capture_id(now: datetime | None = None) -> str:
    """A fresh id: the UTC time to the microsecond, then 12 random hex digits."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.strftime(_TIME_FORMAT)}-{secrets.token_hex(6)}"


def write_capture(directory: Path, sender: str, recipients: list[str], content: bytes) -> str:
    """Store one received message in `directory` and return its id."""
    capture_id = new_capture_id()
    trace = [f"Return-Path: <{sender}>"]
    trace += [f"X-Original-To: {recipient}" for recipient in recipients]
    # SMTP addresses may be UTF-8 (SMTPUTF8); they hold no CR or LF (SMTP is line-based).
    head = ("\r\n".join(trace) + "\r\n").encode("utf-8", "surrogateescape")
    temporary = directory / f".{capture_id}.tmp"
    try:
        temporary.write_bytes(head + content)
        os.replace(temporary, directory / f"{capture_id}{SUFFIX}")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return capture_id


def _header_texts(headers: Message, name: str) -> list[str]:
    """Every `name` header as one line of text, RFC 2047 words decoded (policy.default)."""
    try:
        return [" ".join(str(value).split()) for value in headers.get_all(name, [])]
    except Exception:  # A malformed header must not break the list page.
        return []


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(_HEAD_LIMIT)
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = data.find(separator)
        if end != -1:
            return data[: end + len(separator)]
    return data


def _describe(path: Path) -> CapturedMail | None:
    match = _ID.fullmatch(path.stem)
    if match is None:
        return None
    try:
        received_at = datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None  # Digits in the right places, but no date (a month 13): not ours.
    try:
        head = _read_head(path)
        size = path.stat().st_size
    except FileNotFoundError:
        return None  # Deleted while we listed.
    headers = BytesHeaderParser(policy=default_policy).parsebytes(head)
    sender = "".join(_header_texts(headers, "Return-Path")[:1]).strip("<>")
    subject = "".join(_header_texts(headers, "Subject")[:1])
    return CapturedMail(
        id=path.stem,
        received_at=received_at,
        sender=sender,
        recipients=tuple(_header_texts(headers, "X-Original-To")),
        subject=subject,
        path=path,
        size=size,
    )


def list_captured(directory: Path, limit: int | None = None) -> list[CapturedMail]:
    """The captured messages in `directory`, newest first (at most `limit` of them)."""
    if not directory.is_dir():
        return []
    names = sorted(
        (entry.name for entry in os.scandir(directory) if entry.name.endswith(SUFFIX)),
        reverse=True,
    )
    found: list[CapturedMail] = []
    for name in names:
        if limit is not None and len(found) >= limit:
            break
        mail = _describe(directory / name)
        if mail is not None:
            found.append(mail)
    return found


def captured_path(directory: Path, capture_id: str) -> Path:
    """The file of capture `capture_id`; ValueError for anything that is not a capture id.

    Only ids of the exact generated form are accepted, so no path ("../x", "/etc/passwd",
    "a/b") can reach outside `directory`.
    """
    if not isinstance(capture_id, str) or _ID.fullmatch(capture_id) is None:
        raise ValueError("not a capture id")
    path = directory / f"{capture_id}{SUFFIX}"
    # Belt and braces: the pattern already rules out separators and dots.
    if path.resolve().parent != directory.resolve():
        raise ValueError("not a capture id")
    return path


def read_captured(directory: Path, capture_id: str) -> bytes:
    """The raw bytes of one captured message (trace headers first).

    Raises ValueError when `capture_id` is not a capture id (path traversal is refused there)
    and FileNotFoundError when no such capture exists; a web page answers 404 to both.
    """
    return captured_path(directory, capture_id).read_bytes()


class _CaptureHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        sender = envelope.mail_from or ""
        recipients = list(envelope.rcpt_tos)
        # A thread, so a slow disk does not stall other sessions on the server's loop.
        capture_id = await asyncio.to_thread(
            write_capture, self.directory, sender, recipients, content
        )
        self.count += 1
        return f"250 2.0.0 OK captured as {capture_id}"


class SmtpController(Controller):
    """aiosmtpd's threaded Controller, with the two fixes every SMTP server of this project
    needs: `mailer dev`'s capture server, the test suite's scripted server
    (tests/smtp_server.py) and the benchmarks' counting sink (bench/smtp_sink.py) all use it.

    - Port 0 (the OS picks a free port, so parallel runs never collide): aiosmtpd's start-up
      probe connects to the port it was given, 0; here it connects to the port bound, which
      `port` then holds.
    - A failed bind (the port is taken): aiosmtpd leaves its loop open and lets start() wait
      out the whole `ready_timeout` before it reports anything; here the loop is closed and
      start() raises the bind error (an OSError) at once.
    """

    def _run(self, ready_event: threading.Event) -> None:
        try:
            super()._run(ready_event)
        finally:
            if self.server is None and not self.loop.is_closed():
                self.loop.close()
            ready_event.set()  # start() need not wait out ready_timeout for a failure

    def _trigger_server(self) -> None:
        if self.server is None:
            raise self._thread_exception or RuntimeError("SMTP server failed to start")
        self.port = cast(asyncio.Server, self.server).sockets[0].getsockname()[1]
        super()._trigger_server()


class CaptureServer:
    """An SMTP server on `host`:`port` that writes every message it receives into `directory`.

    `start()` returns once the server answers; `stop()` closes it. Port 0 picks a free port
    (read it from `port` after start()). Also a context manager.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 8025) -> None:
        self.directory = Path(directory)
        self.host = host
        self._requested_port = port
        self._handler = _CaptureHandler(self.directory)
        self._controller: SmtpController | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked by the OS when 0 was asked for)."""
        if self._controller is None:
            return self._requested_port
        return int(self._controller.port)

    @property
    def url(self) -> str:
        """``smtp://host:port``, the MAILER_SMTP_URL that reaches this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"

    @property
    def received(self) -> int:
        """How many messages were captured since start()."""
        return self._handler.count

    def start(self) -> None:
        """Create the directory if need be and start listening; OSError if the port is taken."""
        if self._controller is not None:
            raise RuntimeError("capture server already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        controller = SmtpController(
            self._handler,
            hostname=self.host,
            port=self._requested_port,
            # A fixed name: the default (socket.getfqdn()) may wait on DNS.
            server_hostname="mailer-dev-capture",
            ready_timeout=30.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
