"""`mailer dev`: the web app, a delivery worker and the capture SMTP server in one process."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from flask import Flask
from werkzeug.serving import run_simple

from config import DEV_SMTP_URL
from mailer.delivery.capture import CaptureServer
from mailer.delivery.transport import transport_from_url
from mailer.delivery.worker import Worker

log = logging.getLogger(__name__)


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
        run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)
    finally:
        worker.stop()
        capture.stop()
