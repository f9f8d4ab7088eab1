"""Per-API-key limits on what a key can make the service do to strangers' inboxes.

The API has no per-client limits: keys belong to the shop's own services. But a leaked or
buggy key could create contact after contact, each with a confirmation mail to an address of
its choosing, and turn the shop into a mail bomb (the per-address cap of 3 confirmations a
day limits each address, not how many addresses). So, when set:

- `MAILER_API_CONTACT_LIMIT`: how many `POST /api/v1/contacts` one key may make (e.g.
  `1000 per hour`); over it, 429 and nothing is changed;
- `MAILER_API_CONFIRMATION_LIMIT`: how many confirmation mails one key's requests may cause
  (`POST` and `PATCH /api/v1/contacts`); a request that would cause one more is 429 and
  changes nothing (a request that causes none still goes through).

Both are off by default (trusted internal callers), count per key in the limits' storage
(`MAILER_RATELIMIT_STORAGE_URL`: memory, or Redis shared by all processes), and do not
depend on `MAILER_RATELIMIT_ENABLED`, which is the public pages' switch.
"""

from __future__ import annotations

import math
import time

from flask import current_app
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from mailer.errors import MailerError

CONTACTS = "contacts"
CONFIRMATIONS = "confirmations"
SETTINGS = {CONTACTS: "MAILER_API_CONTACT_LIMIT",
            CONFIRMATIONS: "MAILER_API_CONFIRMATION_LIMIT"}
_EXTENSION = "mailer.api_key_limits"


class KeyLimitReached(MailerError):
    status = 429
    code = "rate_limited"

    def __init__(self, what: str, retry_after: int) -> None:
        things = "contacts created" if what == CONTACTS else "confirmation mails caused"
        super().__init__(f"This API key has reached its limit of {things} "
                         f"({SETTINGS[what]}); nothing was changed. Try again in "
                         f"{retry_after} seconds.", extra={"limit": what})
        self.headers = {"Retry-After": str(retry_after)}


def _limiter() -> FixedWindowRateLimiter:
    """One limiter per app, on the storage of the per-client limits."""
    limiter = current_app.extensions.get(_EXTENSION)
    if limiter is None:
        url = current_app.config.get("MAILER_RATELIMIT_STORAGE_URL") or "memory://"
        limiter = current_app.extensions[_EXTENSION] = FixedWindowRateLimiter(
            storage_from_string(url))
    return limiter


def _items(what: str) -> list[RateLimitItem]:
    setting = current_app.config.get(SETTINGS[what])
    return parse_many(setting) if setting else []


def is_limited(what: str) -> bool:
    """Whether a limit is set for `what`."""
    return bool(current_app.config.get(SETTINGS[what]))


def take(what: str, key_id: int) -> None:
    """Count one `what` for the key; raise KeyLimitReached (429) when a limit is used up
    (then it is not counted). Nothing happens when no limit is set."""
    limiter = _limiter() if is_limited(what) else None
    if limiter is None:
        return
    for item in _items(what):
        if not limiter.hit(item, "mailer-api-key", what, str(key_id)):
            reset = limiter.get_window_stats(item, "mailer-api-key", what, str(key_id))
            raise KeyLimitReached(what, max(1, math.ceil(reset.reset_time - time.time())))
