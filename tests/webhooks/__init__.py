"""Tests of webhooks: a real receiving HTTP server on 127.0.0.1, a real worker and SMTP."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from mailer.extensions import db
from mailer.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.delivery.helpers import FAST, busy_count, run_worker_in_thread

SETTINGS = dataclasses.replace(FAST, webhook_interval=0.05, webhook_backoff=0.05)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records every POST and answers the scripted
    statuses in turn (200 once they are used up)."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = owner.statuses.pop(0) if owner.statuses else 200
                owner.received.append(Received(dict(self.headers.items()), body))
                owner.answered.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """The events answered with a 2xx, in the order they arrived."""
        return [r.event for r, status in zip(self.received, self.answered, strict=True)
                if 200 <= status < 300]


def signatures(header: str) -> tuple[str, list[str]]:
    """(t, [v1, ...]) of a Mailer-Signature header."""
    parts = [part.split("=", 1) for part in header.split(",")]
    timestamp = next(value for key, value in parts if key == "t")
    return timestamp, [value for key, value in parts if key == "v1"]


def verifies(secret: str, received: Received) -> bool:
    """What a receiver does: HMAC-SHA256 of "<t>.<body>" against each v1 value."""
    timestamp, values = signatures(received.headers["Mailer-Signature"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body,
                        hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for value in values)


def webhooks_settled() -> bool:
    return db.session.scalar(select(func.count()).select_from(WebhookDelivery).where(
        WebhookDelivery.status == DeliveryStatus.PENDING.value)) == 0


def run_worker(app: Flask, smtp_url: str, until: Callable[[], bool] | None = None) -> None:
    """A real worker until the mail outbox is idle and no webhook event is pending, in a
    thread of its own."""

    def done() -> bool:
        return busy_count() == 0 and webhooks_settled() and (until is None or until())

    run_worker_in_thread(app, smtp_url, SETTINGS, until=done)
