"""`MAILER_MAX_RATE`: the send rate of all workers together, measured at a real SMTP server."""

from __future__ import annotations

import bisect
import re
import signal
import threading
import time

import pytest
from sqlalchemy import delete, func, select

from config import Config
from mailer.delivery import throttle
from mailer.extensions import db
from mailer.messages import services as outbox
from mailer.messages.models import Category, Message
from mailer.messages.services import SendRequest
from tests.processes import spawn_flask
from tests.smtp_server import ReceivedMessage, ScriptedSmtpServer

RATE = 40.0
COUNT = 400  # 10 s of mail at RATE
RECEIPT = {"order_number": "A-1", "items": [], "total": "€0"}


class TimedSmtpServer(ScriptedSmtpServer):
    """The tests' SMTP server, also noting when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []
        self._arrivals_lock = threading.Lock()

    def _accept(self, message: ReceivedMessage) -> int:
        with self._arrivals_lock:
            self.arrivals.append(time.monotonic())
        return super()._accept(message)


def queue(count: int) -> None:
    for i in range(count):
        outbox.accept(SendRequest(to=f"buyer{i}@example.com", template="receipt", data=RECEIPT,
                                  category=Category.TRANSACTIONAL))
    db.session.commit()


def sent() -> int:
    db.session.remove()
    return db.session.scalar(select(func.count()).select_from(Message)
                             .where(Message.status == "sent"))


def start_worker(app, smtp: ScriptedSmtpServer, rate: float):
    return spawn_flask(app, "mailer", "worker", MAILER_SMTP_URL=smtp.url,
                       MAILER_MAX_RATE=str(rate), MAILER_WORKER_LEASE="5",
                       MAILER_SMTP_CONNECTIONS="4", MAILER_LOG_LEVEL="INFO")


def stop_and_count_sent(process) -> int:
    """SIGTERM a worker; answer how many mails it says it sent (its last log line)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    found = re.search(r"stopped: (\d+) sent", output)
    assert process.returncode == 0 and found, output[-3000:]
    return int(found.group(1))


def busiest_second(arrivals: list[float]) -> int:
    """The most messages that arrived within any one second."""
    return max(bisect.bisect_right(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))


def deliver_throttled(app, workers: int) -> tuple[TimedSmtpServer, list[int]]:
    queue(COUNT)
    with TimedSmtpServer() as smtp:
        processes = [start_worker(app, smtp, RATE) for _ in range(workers)]
        try:
            deadline = time.monotonic() + COUNT / RATE + 60
            while sent() < COUNT:
                assert time.monotonic() < deadline, f"only {sent()} of {COUNT} sent"
                assert all(p.poll() is None for p in processes), "a worker exited"
                time.sleep(0.2)
        finally:
            shares = [stop_and_count_sent(p) for p in processes]
    return smtp, shares


def assert_rate_held(smtp: TimedSmtpServer) -> None:
    arrivals = sorted(smtp.arrivals)
    assert len(arrivals) == COUNT
    rate = (COUNT - 1) / (arrivals[-1] - arrivals[0])
    assert RATE * 0.9 <= rate <= RATE * 1.1, f"{rate:.1f} msg/s for a limit of {RATE}"
    # Evenly paced, not in bursts (unthrottled, all of them go within a second). Generous: a
    # worker the busy machine stalls sends its missed slots' mail when it wakes up.
    assert busiest_second(arrivals) <= RATE * 2, busiest_second(arrivals)


@pytest.mark.slow
def test_one_worker_holds_the_rate(app):
    smtp, shares = deliver_throttled(app, workers=1)
    assert_rate_held(smtp)
    assert shares == [COUNT]


@pytest.mark.slow
def test_two_workers_together_hold_the_rate_and_both_send(app):
    smtp, shares = deliver_throttled(app, workers=2)
    assert_rate_held(smtp)
    assert sum(shares) == COUNT
    # Neither starves: they take turns at reserving slots.
    assert min(shares) >= COUNT * 0.25, shares


def test_reservations_follow_each_other_and_never_overlap(app):
    first = throttle.reserve(10, 100.0)  # 0.1 s of slots
    second = throttle.reserve(10, 100.0)
    third = throttle.reserve(5, 100.0)
    assert first.delay < 0.05
    # Each starts where the one before ends (less the little time between the calls).
    assert 0.05 < second.delay <= 0.1 + 1e-6
    assert 0.15 < third.delay <= 0.2 + 1e-6


def test_the_row_comes_back_when_missing(app):
    db.session.execute(delete(throttle.SendRate))
    db.session.commit()
    assert throttle.reserve(1, 10.0).delay < 0.05
    assert db.session.scalar(select(func.count()).select_from(throttle.SendRate)) == 1


def test_a_worker_paces_its_slots_evenly():
    limiter = throttle.Throttle(20.0)
    assert limiter.claim_size(200) == 20 and limiter.claim_size(5) == 5
    assert limiter.wait_before_claim() == 0.0
    limiter.add(throttle.Grant(count=3, delay=1.0))
    slots = [limiter.next_slot() for _ in range(3)]
    assert slots[1] - slots[0] == pytest.approx(0.05) and slots[2] - slots[1] == pytest.approx(0.05)
    # Used up: without a grant it still never goes faster than the rate on its own.
    assert limiter.next_slot() - slots[2] >= 0.05 - 1e-9


def test_no_limit_means_no_throttle_and_a_bad_limit_is_refused(app):
    assert app.config["MAILER_MAX_RATE"] == 0
    assert throttle.Throttle.from_app(app) is None  # the worker then never calls into it
    for bad in ("-5", "inf", "nan"):
        with pytest.raises(ValueError, match="MAILER_MAX_RATE"):
            Config.from_env({"MAILER_MAX_RATE": bad})
