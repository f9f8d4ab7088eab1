"""The delivery worker: an asyncio loop that keeps SMTP busy while the database works aside.

Three kinds of task share one event loop:
- the claimer takes due messages in batches and has the consent gate look again
  (in a worker thread), then renders and builds them one at a time on the loop,
  between SMTP replies, and queues them;
- senders (one per pooled SMTP connection) hand queued mails to the transport;
- the recorder writes outcomes back in batches and renews the lease of what
  the worker holds, by primary key (in the same worker thread).
The database is only ever touched from that one thread, so the SMTP coroutines
never wait on it, and a SQLite database sees one writer per worker. Rendering needs
no database, and done in that thread it made the two threads take turns at the
interpreter lock, leaving the SMTP connections idle for each turn; on the loop it
costs each reply at most one mail's rendering (the claimer gives the loop two turns
after each mail, so that a reply's sender runs before the next mail is rendered).
With DKIM signing (over 1 ms of CPU a mail through OpenSSL, about 10 ms with dkimpy
alone) mails are still built in the thread, so that no signature holds up the loop.

Stopping (SIGTERM/SIGINT): claim nothing more, let senders finish what is
queued for a few seconds, hand back what was not attempted, record, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask

from mailer import metrics
from mailer.campaigns import scheduler
from mailer.delivery import outbox, throttle
from mailer.delivery.outbox import Outcome
from mailer.delivery.prepare import Pending, Prepared, build_one, prepare, screen
from mailer.delivery.transport import Outcome as SmtpOutcome
from mailer.delivery.transport import SendResult, Transport
from mailer.messages.models import MessageStatus

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = 200
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    max_attempts: int = 10
    retry_backoff: float = 60.0
    connections: int = 4
    drain_seconds: float = 6.0
    record_interval: float = 0.2
    scheduler_interval: float = 1.0
    webhook_interval: float = 0.5
    webhook_batch: int = 50
    webhook_backoff: float = 30.0

    @classmethod
    def from_app(cls, app: Flask) -> WorkerSettings:
        config = app.config
        return cls(
            retry_backoff=float(config.get("MAILER_RETRY_BACKOFF", 60.0)),
            connections=int(config.get("MAILER_SMTP_CONNECTIONS", 4)),
            max_attempts=int(config.get("MAILER_MAX_ATTEMPTS", 10)),
            batch_size=int(config.get("MAILER_WORKER_BATCH", 200)),
            lease_seconds=float(config.get("MAILER_WORKER_LEASE", 30.0)),
            webhook_backoff=float(config.get("MAILER_WEBHOOK_RETRY_BACKOFF", 30.0)),
        )


HOUSEKEEPING_INTERVAL = 600.0


def housekeeping() -> None:
    """Forget what no rule needs any more: old idempotency records and referral rows; on
    SQLite, empty the write-ahead log once (SQLite's own checkpoints copy it, but start it
    over only when no reader is behind them)."""
    from mailer.database import truncate_sqlite_wal
    from mailer.extensions import db
    from mailer.messages.services import purge_idempotency_records
    from mailer.referrals.services import purge_expired
    from mailer.webhooks.services import purge_finished

    idempotency = purge_idempotency_records()
    referrals = purge_expired()
    purge_finished()  # the webhook delivery log keeps 30 days
    db.session.commit()
    outbox.settle_scrubs()
    truncate_sqlite_wal(db.engine)
    if idempotency or referrals:
        log.info("housekeeping: %d idempotency records, %d referral rows removed",
                 idempotency, referrals)


def new_owner() -> str:
    """A lease owner name that says which process holds a row."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_ENHANCED_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def is_hard_bounce(result: SendResult) -> bool:
    """A refusal that says the mailbox does not exist or cannot take mail (RFC 3463 5.1.x,
    5.2.1), or a bare 550/551/553 refusal of the recipient. A policy or content refusal
    (5.7.x, spam) fails the message but does not mark the address undeliverable."""
    if not result.recipient_refused:
        return False
    enhanced = _ENHANCED_STATUS.search(result.reply or "")
    if enhanced is not None:
        klass, subject, detail = enhanced.groups()
        return klass == "5" and (subject == "1" or (subject, detail) == ("2", "1"))
    return result.code in (550, 551, 553)


def outcome_of(prepared: Prepared, result: SendResult) -> Outcome:
    """Map an SMTP result onto the message's next status."""
    claimed = prepared.claimed
    if result.outcome is SmtpOutcome.SENT:
        status, detail = MessageStatus.SENT, None
    elif result.outcome is SmtpOutcome.TEMPORARY:
        status, detail = MessageStatus.DEFERRED, result.reply
    else:
        status, detail = MessageStatus.FAILED, result.reply
    if result.code is not None and detail:
        detail = f"{result.code} {detail}"
    return Outcome(claimed.id, status, claimed.category, claimed.address_hash, claimed.attempts,
                   detail, hard_bounce=is_hard_bounce(result))


class Worker:
    """One delivery worker process's loop; see the module docstring."""

    def __init__(self, app: Flask, transport: Transport, settings: WorkerSettings | None = None,
                 owner: str | None = None) -> None:
        self.app = app
        self.transport = transport
        self.settings = settings or WorkerSettings.from_app(app)
        self.owner = owner or new_owner()
        self.stopping = asyncio.Event()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-db")
        self._queue: asyncio.Queue[Prepared] = asyncio.Queue(maxsize=self.settings.batch_size * 2)
        self._outcomes: list[Outcome] = []
        self._in_flight: set[int] = set()
        self._paused_campaigns: set[int] = set()
        self._held_back: list[int] = []
        # Claimed and not yet recorded or handed back: the rows whose lease renew() extends
        # (by primary key; looking them up by owner scanned the whole outbox).
        self._held: set[int] = set()
        self._build_in_db = app.extensions.get("mailer.dkim") is not None
        self._throttle = throttle.Throttle.from_app(app)  # None: MAILER_MAX_RATE 0, no limit
        self.sent = 0

    async def _in_db(self, function: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self.app.app_context():
                return function(*args)

        return await asyncio.get_running_loop().run_in_executor(self._db, run)

    def stop(self) -> None:
        """Ask the loop to wind down (safe to call from a signal handler)."""
        self.stopping.set()

    async def _claimer(self) -> None:
        settings = self.settings
        while not self.stopping.is_set():
            if self._queue.qsize() > settings.batch_size:
                await asyncio.sleep(0.01)
                continue
            limit = settings.batch_size
            if self._throttle is not None:  # claim only what the shared rate will take soon
                if wait := self._throttle.wait_before_claim():
                    await self._pause(wait)
                    continue
                limit = self._throttle.claim_size(limit)
            ready: list[Prepared] = []
            pending: list[Pending] = []
            done: list[Outcome] = []
            try:
                batch = await self._in_db(outbox.claim, self.owner, limit,
                                          settings.lease_seconds)
                if batch and self._build_in_db:
                    ready, done = await self._in_db(prepare, batch, settings.max_attempts,
                                                    self.owner)
                elif batch:
                    pending, done = await self._in_db(screen, batch, settings.max_attempts,
                                                      self.owner)
                if self._throttle is not None and (ready or pending):
                    self._throttle.add(await self._in_db(self._throttle.reserve,
                                                         len(ready) + len(pending)))
            except Exception:
                log.exception("claim failed; retrying")
                await self._pause(settings.poll_interval * 4)
                continue
            # Not before: a batch dropped by a failure above is not renewed, so its leases
            # run out and the rows are claimed again. Rows screen() handed back (a paused
            # campaign) are in none of the three lists.
            self._held.update([p.claimed.id for p in ready], [p.claimed.id for p in pending],
                              [o.id for o in done])
            self._outcomes.extend(done)
            for prepared in ready:
                await self._queue.put(prepared)
            await self._build(pending)
            if not batch:
                await self._pause(settings.poll_interval)

    async def _build(self, pending: list[Pending]) -> None:
        """Render and build each mail on the loop and queue it, yielding after each one."""
        if not pending:
            return
        with self.app.app_context():  # settings, templates and keys; this task's alone
            for item in pending:
                try:
                    result = build_one(item)
                except Exception as exc:
                    # A bug rather than a bad mail (those are outcomes already): try it again
                    # later, with backoff, until the attempts run out.
                    log.exception("building message=%s failed", item.claimed.public_id)
                    claimed = item.claimed
                    result = Outcome(claimed.id, MessageStatus.DEFERRED, claimed.category,
                                     claimed.address_hash, claimed.attempts,
                                     f"internal error building the mail ({type(exc).__name__})")
                if isinstance(result, Prepared):
                    await self._queue.put(result)
                else:
                    self._outcomes.append(result)
                # Two turns of the loop between two mails: in the first, the SMTP replies that
                # came in meanwhile are read, which only schedules their senders; in the
                # second, those senders send their next command. With one turn, each reply's
                # sender waited behind the next mail's rendering, four replies a message.
                await asyncio.sleep(0)
                await asyncio.sleep(0)

    async def _scheduler(self) -> None:
        """Fan out due campaigns and finish done ones, a round a second."""
        while not self.stopping.is_set():
            try:
                self._paused_campaigns = await self._in_db(scheduler.tick, self.owner)
            except Exception:
                log.exception("campaign scheduler round failed")
            await self._pause(self.settings.scheduler_interval)

    async def _webhooks(self) -> None:
        """Deliver due webhook events: claim a batch in the database thread, POST them
        concurrently on the loop (httpx), record the outcomes; until stopping."""
        import httpx

        from mailer.webhooks import services as webhooks

        settings = self.settings
        allow_private = bool(self.app.config.get("MAILER_WEBHOOK_ALLOW_PRIVATE", True))
        # No redirects: a receiver's 3xx is no delivery, and must not lead the request on.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            while not self.stopping.is_set():
                try:
                    batch = await self._in_db(webhooks.claim, self.owner,
                                              settings.webhook_batch, settings.lease_seconds)
                    if batch:
                        attempts = await asyncio.gather(
                            *(webhooks.post(client, event, allow_private) for event in batch))
                        await self._in_db(webhooks.record_attempts, self.owner, attempts,
                                          settings.webhook_backoff)
                        continue
                except Exception:
                    log.exception("webhook delivery round failed")  # leases lapse: retried
                await self._pause(settings.webhook_interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _sender(self) -> None:
        while True:
            prepared = await self._queue.get()
            if prepared.claimed.campaign_id in self._paused_campaigns:
                # Paused after it was prepared: hand it back unsent.
                self._held_back.append(prepared.claimed.id)
                self._queue.task_done()
                continue
            self._in_flight.add(prepared.claimed.id)
            try:
                if self._throttle is not None:
                    await self._throttle.wait()  # this worker's next slot of the shared rate
                started = time.perf_counter()
                result = await self.transport.send(prepared.mail_from, prepared.recipient,
                                                   prepared.message)
                metrics.observe_smtp_send(result.outcome.value, time.perf_counter() - started)
            except asyncio.CancelledError:
                # Cut off mid-send at shutdown: it stays in flight and is handed
                # back (it may have arrived: the documented duplicate window).
                self._queue.task_done()
                raise
            except Exception as exc:
                log.exception("transport error message=%s", prepared.claimed.public_id)
                result = SendResult(SmtpOutcome.TEMPORARY, None, f"transport error: {exc!r}"[:500])
            self._in_flight.discard(prepared.claimed.id)
            self._queue.task_done()
            self._outcomes.append(outcome_of(prepared, result))
            # One line per delivery: ids and the SMTP code, never the reply (it may quote
            # the recipient) or the address.
            log.info("delivery message=%s outcome=%s", prepared.claimed.public_id,
                     result.outcome.value,
                     extra={"event": "delivery", "message_id": prepared.claimed.public_id,
                            "campaign_id": prepared.claimed.campaign_id,
                            "outcome": result.outcome.value, "smtp_code": result.code})
            if result.outcome is SmtpOutcome.SENT:
                self.sent += 1

    async def _flush(self) -> None:
        if self._held_back:
            held, self._held_back = self._held_back, []
            try:
                await self._in_db(outbox.release, self.owner, held)
                self._held.difference_update(held)
            except Exception:
                log.exception("handing back %d held messages failed; will retry", len(held))
                self._held_back[:0] = held
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            await self._in_db(outbox.record, self.owner, batch, self.settings.retry_backoff,
                              self.settings.max_attempts)
            self._held.difference_update([o.id for o in batch])
        except Exception:
            # Put them back: the next flush retries, and the lease keeps the rows ours.
            log.exception("recording %d outcomes failed; will retry", len(batch))
            self._outcomes[:0] = batch
            await asyncio.sleep(0.5)

    async def _recorder(self) -> None:
        renew_every = self.settings.lease_seconds / 3
        last_renewal = time.monotonic()
        last_housekeeping = 0.0
        while True:
            await asyncio.sleep(self.settings.record_interval)
            await self._flush()
            if time.monotonic() - last_renewal >= renew_every:
                try:
                    await self._in_db(outbox.renew, self.owner, self.settings.lease_seconds,
                                      list(self._held))
                    last_renewal = time.monotonic()
                except Exception:
                    log.exception("lease renewal failed")
            if time.monotonic() - last_housekeeping >= HOUSEKEEPING_INTERVAL:
                last_housekeeping = time.monotonic()
                try:
                    await self._in_db(housekeeping)
                except Exception:
                    log.exception("housekeeping failed")

    async def run(self) -> None:
        """Deliver until stop() is called; then finish or hand back what is held."""
        log.info("worker %s starting with %d connections", self.owner,
                 self.settings.connections)
        claimer = asyncio.create_task(self._claimer(), name="claimer")
        senders = [asyncio.create_task(self._sender(), name=f"sender-{i}")
                   for i in range(self.settings.connections)]
        recorder = asyncio.create_task(self._recorder(), name="recorder")
        campaign_scheduler = asyncio.create_task(self._scheduler(), name="scheduler")
        webhook_delivery = asyncio.create_task(self._webhooks(), name="webhooks")
        try:
            await self.stopping.wait()
        finally:
            await asyncio.gather(campaign_scheduler, webhook_delivery, return_exceptions=True)
            await self._shutdown(claimer, senders, recorder)

    async def _shutdown(self, claimer: asyncio.Task[None], senders: list[asyncio.Task[None]],
                        recorder: asyncio.Task[None]) -> None:
        self.stopping.set()
        await asyncio.gather(claimer, return_exceptions=True)
        try:
            await asyncio.wait_for(self._queue.join(), timeout=self.settings.drain_seconds)
        except TimeoutError:
            log.warning("worker %s: stopping with mail still queued; handing it back", self.owner)
        for task in [*senders, recorder]:
            task.cancel()
        await asyncio.gather(*senders, recorder, return_exceptions=True)
        unsent = list(self._in_flight) + self._held_back
        self._held_back = []
        while not self._queue.empty():
            unsent.append(self._queue.get_nowait().claimed.id)
        await self._flush()
        released = await self._in_db(outbox.release, self.owner, unsent)
        await self.transport.close()
        self._db.shutdown(wait=True)
        log.info("worker %s stopped: %d sent, %d handed back", self.owner, self.sent, released)


def run_worker(app: Flask, transport: Transport | None = None,
               settings: WorkerSettings | None = None) -> int:
    """Run a worker in this process until SIGTERM/SIGINT; returns the exit status (0)."""
    from mailer.delivery.transport import transport_from_url

    async def main() -> None:
        chosen = transport or transport_from_url(
            app.config["MAILER_SMTP_URL"], int(app.config.get("MAILER_SMTP_CONNECTIONS", 4))
        )
        worker = Worker(app, chosen, settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    asyncio.run(main())
    return 0
