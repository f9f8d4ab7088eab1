"""Running a real worker against the test database until the outbox is idle."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from sqlalchemy import func, or_, select

from mailer.database import utcnow
from mailer.delivery.transport import SmtpPool
from mailer.delivery.worker import Worker, WorkerSettings
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus
from mailer.smtp_url import SmtpSettings

FAST = WorkerSettings(batch_size=50, lease_seconds=5, poll_interval=0.05, record_interval=0.05,
                      retry_backoff=0.2, max_attempts=3, connections=2, drain_seconds=3)


def busy_count() -> int:
    """Messages a worker still has to act on now (queued, held, or deferred and due)."""
    now = utcnow()
    return db.session.scalar(
        select(func.count()).select_from(Message).where(
            or_(Message.status.in_([MessageStatus.QUEUED, MessageStatus.SENDING]),
                (Message.status == MessageStatus.DEFERRED) & (Message.due_at <= now))
        )
    )


def run_worker_until_idle(app: Flask, smtp_url: str, settings: WorkerSettings = FAST,
                          timeout: float = 30.0, until_all_final: bool = False,
                          until: Callable[[], bool] | None = None) -> Worker:
    """Run one worker (real SMTP pool) until nothing is left to do now (or `until()` holds,
    checked in the worker's database thread), then stop it."""

    async def main() -> Worker:
        transport = SmtpPool(SmtpSettings.from_url(smtp_url + "?timeout=5"), settings.connections)
        worker = Worker(app, transport, settings)
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)

            def idle() -> bool:
                db.session.remove()
                if until is not None:
                    return until()
                if until_all_final:
                    return db.session.scalar(
                        select(func.count()).select_from(Message).where(
                            Message.status.not_in(["sent", "failed", "suppressed", "cancelled"])
                        )
                    ) == 0
                return busy_count() == 0

            if await worker._in_db(idle):
                break
        else:
            worker.stop()
            await task
            raise TimeoutError("the outbox did not become idle")
        worker.stop()
        await task
        return worker

    worker = asyncio.run(main())
    db.session.remove()
    return worker


def run_worker_in_thread(app: Flask, smtp_url: str, settings: WorkerSettings = FAST,
                         **options: Any) -> None:
    """run_worker_until_idle() in a thread of its own, waited for (at most 90 s), its error
    raised here: a test that ran earlier in the session may have left an asyncio loop
    running in this thread (Playwright owns it in the browser tests)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with app.app_context():
                run_worker_until_idle(app, smtp_url, settings, **options)
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
