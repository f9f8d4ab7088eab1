"""The shared send-rate limit (`MAILER_MAX_RATE`): all workers together hand at most that many
mails a second to SMTP.

The limit is kept in the database, in one row (`send_rate`), as the time of the next free
send slot: a generic cell rate algorithm (GCRA), the token bucket written as a single
timestamp. A worker that has claimed and screened `n` messages reserves the next `n` slots in
one atomic UPDATE (`next_slot = max(next_slot, now) + n / rate`) and learns when its first slot
is; its senders then take the slots in order, one mail per slot, so mail reaches SMTP evenly
spaced, never in bursts, and the slots of all workers never overlap. Nobody is refused: a
worker whose turn is later simply waits, so no worker starves the other. A worker claims
again only when its own reserved slots are about to run out, and then only about one
second's worth of mail, so reservations stay short and the workers take turns.

The time is the database's own clock on PostgreSQL (workers on several hosts need not agree
on the time), and a reservation answers "your first slot is in d seconds", which each worker
turns into its own monotonic clock. SQLite serves one host, whose clock is used. A reserved
slot left unused (a mail the gate refused after all, a worker that died) is only lost time:
the limit is never exceeded because of it.

With `MAILER_MAX_RATE` 0 there is no throttle at all: the worker holds `None` and never
calls into this module.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Double, text
from sqlalchemy.orm import Mapped, mapped_column

from mailer.extensions import db

ROW_ID = 1
# How much mail one reservation covers, in seconds of the rate: short, so that workers take
# turns often and a paused or stopped worker holds few slots.
GRANT_SECONDS = 1.0
# Reserve again when this little of the last reservation is left: enough for a claim, the
# consent gate and a reservation (a few database round trips) on a busy machine, so that the
# next slots follow on without a gap.
LEAD_SECONDS = 0.75


class SendRate(db.Model):
    """The one row of the shared send-rate limit: when the next free send slot begins."""

    __tablename__ = "send_rate"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Seconds since the epoch (the database's clock on PostgreSQL).
    next_slot: Mapped[float] = mapped_column(Double)


@dataclass(frozen=True, slots=True)
class Grant:
    """Reserved send slots: `count` of them, the first `delay` seconds from now, then one every
    1/rate seconds."""

    count: int
    delay: float


_RESERVE = {
    # statement_timestamp() is fixed for the statement, so SET and RETURNING see one "now".
    "postgresql": text(
        "UPDATE send_rate SET next_slot = GREATEST(next_slot, "
        "EXTRACT(EPOCH FROM statement_timestamp())::double precision) + :span "
        "WHERE id = :row_id "
        "RETURNING next_slot - :span - EXTRACT(EPOCH FROM statement_timestamp())::double precision"
    ),
    "sqlite": text(
        "UPDATE send_rate SET next_slot = max(next_slot, :now) + :span WHERE id = :row_id "
        "RETURNING next_slot - :span - :now"
    ),
}
_CREATE_ROW = text(
    "INSERT INTO send_rate (id, next_slot) VALUES (:row_id, 0) ON CONFLICT (id) DO NOTHING"
)


def reserve(count: int, rate: float) -> Grant:
    """Reserve the next `count` send slots of all workers at `rate` per second; commits.

    One atomic UPDATE, so two workers never get the same slot (PostgreSQL locks the row
    for the statement; SQLite has one writer at a time).
    """
    statement = _RESERVE["postgresql" if db.engine.dialect.name == "postgresql" else "sqlite"]
    params = {"row_id": ROW_ID, "span": count / rate, "now": time.time()}
    delay = db.session.execute(statement, params).scalar()
    if delay is None:  # no row yet (it is created by the migration, but tables get emptied)
        db.session.execute(_CREATE_ROW, {"row_id": ROW_ID})
        params["now"] = time.time()
        delay = db.session.execute(statement, params).scalar_one()
    db.session.commit()
    return Grant(count, max(float(delay), 0.0))


class Throttle:
    """One worker's side of the limit: how much to claim, when, and when each mail may go.

    Used on the worker's event loop only; `reserve` runs in its database thread.
    """

    def __init__(self, rate: float) -> None:
        if not rate > 0:
            raise ValueError("a throttle needs a rate above 0")
        self.rate = rate
        self.interval = 1.0 / rate
        self._slots: deque[list[float]] = deque()  # [first slot (monotonic), slots left]
        self._last = 0.0  # the last slot handed out (monotonic)

    @classmethod
    def from_app(cls, app: Flask) -> Throttle | None:
        """The throttle `MAILER_MAX_RATE` asks for, or None when it is 0 (no limit)."""
        rate = float(app.config.get("MAILER_MAX_RATE") or 0)
        return cls(rate) if rate > 0 else None

    def claim_size(self, batch_size: int) -> int:
        """How many messages to claim next: about GRANT_SECONDS of the rate, at most a batch."""
        return max(1, min(batch_size, math.ceil(self.rate * GRANT_SECONDS)))

    def wait_before_claim(self) -> float:
        """Seconds to wait before claiming more (0: claim now): until the slots already
        reserved are almost used up."""
        if not self._slots:
            return 0.0
        start, left = self._slots[-1]
        end = start + left * self.interval
        return max(end - time.monotonic() - LEAD_SECONDS, 0.0)

    def reserve(self, count: int) -> Grant:
        """Reserve `count` slots in the database (call in the database thread)."""
        return reserve(count, self.rate)

    def add(self, grant: Grant) -> None:
        """Make a grant's slots this worker's (on the loop, right after `reserve`)."""
        if grant.count > 0:
            self._slots.append([time.monotonic() + grant.delay, grant.count])

    def next_slot(self) -> float:
        """Take the next slot: the monotonic time at which one more mail may go."""
        if self._slots:
            slot = self._slots[0]
            at = slot[0]
            slot[0] += self.interval
            slot[1] -= 1
            if slot[1] <= 0:
                self._slots.popleft()
        else:
            # More mail than slots (a reservation was lost to an error): never faster than the
            # rate from this worker alone.
            at = max(time.monotonic(), self._last + self.interval)
        self._last = at
        return at

    async def wait(self) -> None:
        """Wait for this worker's next send slot (a sender calls this before each mail)."""
        delay = self.next_slot() - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
