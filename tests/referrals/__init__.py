"""Tests of Tell-a-Friend: services, API and page."""

from __future__ import annotations

from flask import Flask

from mailer.delivery.worker import WorkerSettings
from tests.delivery.helpers import FAST, run_worker_in_thread


def deliver(app: Flask, smtp_url: str, settings: WorkerSettings = FAST) -> None:
    """Run the real worker until the outbox is idle, in a thread of its own."""
    run_worker_in_thread(app, smtp_url, settings)
