"""`mailer worker` as real processes: killed, stopped, and two at once. Nothing is lost."""

from __future__ import annotations

import collections
import signal
import time

import pytest
from sqlalchemy import func, select

from mailer.extensions import db
from mailer.messages import services as outbox
from mailer.messages.models import Category, Message
from mailer.messages.services import SendRequest
from tests.processes import spawn_flask
from tests.smtp_server import ScriptedSmtpServer

pytestmark = pytest.mark.slow
COUNT = 300
BATCH = 20
RECEIPT = {"order_number": "A-1", "items": [], "total": "€0"}


def queue(count: int) -> list[str]:
    addresses = [f"buyer{i}@example.com" for i in range(count)]
    for address in addresses:
        outbox.accept(SendRequest(to=address, template="receipt", data=RECEIPT,
                                  category=Category.TRANSACTIONAL))
    db.session.commit()
    return addresses


def statuses() -> dict[str, int]:
    db.session.remove()
    rows = db.session.execute(select(Message.status, func.count()).group_by(Message.status))
    return dict(rows.all())


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; statuses {statuses()}")


def worker(app, smtp):
    return spawn_flask(app, "mailer", "worker", MAILER_SMTP_URL=smtp.url,
                       MAILER_WORKER_LEASE="2", MAILER_WORKER_BATCH=str(BATCH),
                       MAILER_SMTP_CONNECTIONS="4", MAILER_RETRY_BACKOFF="0.2")


def stop(process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    if process.stdout:
        process.stdout.close()


def test_a_killed_worker_loses_nothing_and_duplicates_stay_within_the_in_flight_window(app):
    with ScriptedSmtpServer() as smtp:
        smtp.delay = 0.01  # slow enough to kill it mid-stream
        addresses = queue(COUNT)
        first = worker(app, smtp)
        try:
            smtp.wait_for_messages(40, timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
        delivered_before = len(smtp.messages)
        assert delivered_before < COUNT, "killed too late to test anything"

        second = worker(app, smtp)
        try:
            wait_for(lambda: statuses().get("sent", 0) == COUNT, 90, "every message sent")
        finally:
            stop(second)
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
        assert set(received) == set(addresses)  # none missing
        duplicates = sum(n - 1 for n in received.values())
        # Only mail the dead worker held (claimed, queued or sent but not yet recorded) can
        # go twice: it holds at most three batches.
        assert duplicates <= 3 * BATCH, duplicates


def test_sigterm_finishes_or_hands_back_and_exits_0_within_10_seconds(app):
    with ScriptedSmtpServer() as smtp:
        smtp.delay = 0.01
        addresses = queue(COUNT)
        process = worker(app, smtp)
        try:
            smtp.wait_for_messages(30, timeout=60)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(12) == 0
            assert time.monotonic() - started < 10
        finally:
            stop(process)
        after_stop = statuses()
        assert after_stop.get("sending", 0) == 0, after_stop  # nothing left held
        assert after_stop.get("sent", 0) == len(smtp.messages)

        second = worker(app, smtp)
        try:
            wait_for(lambda: statuses().get("sent", 0) == COUNT, 90, "every message sent")
        finally:
            stop(second)
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
        assert received == collections.Counter(addresses)  # each exactly once


def test_two_workers_at_once_send_each_message_once(app):
    with ScriptedSmtpServer() as smtp:
        addresses = queue(COUNT)
        workers = [worker(app, smtp), worker(app, smtp)]
        try:
            wait_for(lambda: statuses().get("sent", 0) == COUNT, 90, "every message sent")
        finally:
            for process in workers:
                stop(process)
        received = collections.Counter(m.rcpt_tos[0] for m in smtp.messages)
        assert received == collections.Counter(addresses)
