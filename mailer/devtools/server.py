"""`mailer dev`: the web app, a delivery worker and the capture SMTP server in one process."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, run_simple

from config import DEV_SMTP_URL
from mailer.delivery.transport import transport_from_url
from mailer.delivery.worker import Worker
from mailer.devtools.capture import CaptureServer

log = logging.getLogger(__name__)
request_log = logging.getLogger("werkzeug")

# Anything shaped like an address, and long path segments (signed tokens carry a readable
# payload), are masked in the request log.
_ADDRESS = re.compile(r"[^\s/@\"'<>]+@[^\s/@\"'<>?#]+")
_TOKEN_LENGTH = 32


def mask_path(raw_path: str) -> str:
    """The path with addresses and long tokens replaced, and no query string (a query can
    carry an address too: `?email=...`)."""
    path, has_query, _query = raw_path.partition("?")
    segments = []
    for segment in unquote(path).split("/"):
        if _ADDRESS.search(segment):
            segment = _ADDRESS.sub("<address>", segment)
        elif len(segment) >= _TOKEN_LENGTH:
            segment = "<token>"
        segments.append(segment)
    masked = "/".join(segments)
    # Control characters could forge log lines.
    masked = "".join(c if c.isprintable() else "?" for c in masked)
    return masked + ("?<query>" if has_query else "")


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler with a request log that never names a person.

    Werkzeug writes `127.0.0.1 - - [date] "GET /api/v1/contacts/ann@example.com HTTP/1.1"
    200 -`: the client's IP next to an address, which the README promises never to log. This
    writes `GET /api/v1/contacts/<address> 200`: method, masked path, status.
    """

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        method = getattr(self, "command", None) or "-"
        path = getattr(self, "path", None)
        shown = mask_path(path) if path else "(unreadable request line)"
        request_log.info("%s %s %s", method, shown, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        # Errors (a bad request line, a dropped connection) quote the request line: mask
        # addresses in them too, and leave out the client address werkzeug would prefix.
        text = message % args if args else message
        text = "".join(c if c.isprintable() else "?" for c in _ADDRESS.sub("<address>", text))
        request_log.log(getattr(logging, type.upper(), logging.INFO), "%s", text)


class WorkerThread(threading.Thread):
    """A delivery worker on its own event loop in a background thread."""

    def __init__(self, app: Flask) -> None:
        super().__init__(name="mailer-worker", daemon=True)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._ready = threading.Event()

    def run(self) -> None:
        async def main() -> None:
            config = self.app.config
            transport = transport_from_url(config["MAILER_SMTP_URL"],
                                           int(config.get("MAILER_SMTP_CONNECTIONS", 4)))
            self._worker = Worker(self.app, transport)
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._worker.run()

        asyncio.run(main())

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (it hands back what it holds) and wait for the thread."""
        self._ready.wait(timeout)
        if self._loop is not None and self._worker is not None:
            self._loop.call_soon_threadsafe(self._worker.stop)
        self.join(timeout)


def serve(app: Flask, host: str, port: int, smtp_port: int) -> None:
    """Run web, worker and capture server until interrupted."""
    # aiosmtpd logs every envelope address at INFO; addresses stay out of logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    capture_dir = Path(app.instance_path) / "captured"
    capture_dir.mkdir(parents=True, exist_ok=True)
    app.config["MAILER_CAPTURE_DIR"] = str(capture_dir)
    capture = CaptureServer(capture_dir, port=smtp_port)
    capture.start()
    if app.config["MAILER_SMTP_URL"] == DEV_SMTP_URL:
        app.config["MAILER_SMTP_URL"] = capture.url
    worker = WorkerThread(app)
    worker.start()
    log.info("capture SMTP server on 127.0.0.1:%d; captured mail at /dev/mail/", smtp_port)
    try:
        # Not app.run(): Flask ignores it inside a `flask` command.
        run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True,
                   request_handler=RequestHandler)
    finally:
        worker.stop()
        capture.stop()
