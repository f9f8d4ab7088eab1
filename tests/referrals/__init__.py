"""Tests of Tell-a-Friend: services, API and page."""

from __future__ import annotations

import threading

from flask import Flask

from mailer.delivery.worker import WorkerSettings
from mailer.extensions import db
from tests.delivery.helpers import FAST, run_worker_until_idle


def deliver(app: Flask, smtp_url: str, settings: WorkerSettings = FAST) -> None:
    """Run the real worker until the outbox is idle, in a thread of its own: a test that ran
    earlier in the session may have left an asyncio loop running in this one (Playwright)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with app.app_context():
                run_worker_until_idle(app, smtp_url, settings)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(90)
    if thread.is_alive():
        raise TimeoutError("the worker did not finish")
    if errors:
        raise errors[0]
    db.session.remove()
