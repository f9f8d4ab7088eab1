"""Issuing and checking API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import bindparam, event, or_, select, update
from sqlalchemy.exc import DBAPIError

from mailer.apikeys.models import ApiKey
from mailer.database import utcnow
from mailer.errors import NotFound
from mailer.extensions import db

log = logging.getLogger(__name__)

KEY_PREFIX = "mk_"

# Every scope a key can hold; the README documents the same list.
SCOPES: dict[str, str] = {
    "contacts:read": "read and export contacts",
    "contacts:write": "create, change and erase contacts",
    "topics:read": "list topics",
    "topics:write": "create topics",
    "messages:send": "send mail and read its status",
    "referrals:write": "send Tell-a-Friend mails",
    "campaigns:read": "list campaigns and their counts",
    "campaigns:write": "create, schedule, pause, resume and cancel campaigns",
    "inbound:write": "hand in bounces and complaints",
    "reports:read": "read audience reports (counts of groups of at least k contacts)",
    "notices:write": "send service notices (policy revisions) and read their progress",
    "webhooks:write": "register, list, delete webhooks and rotate their secrets",
}


# Scopes a key gets only when they are named: handing in bounce and complaint reports marks
# addresses, which no calling service needs by default (CONTRACT r2).
ONLY_WHEN_NAMED = frozenset({"inbound:write"})
DEFAULT_SCOPES = [scope for scope in SCOPES if scope not in ONLY_WHEN_NAMED]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def issue(name: str, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    """Create a key (256 random bits) and return its row and the key, which is never stored.

    No scopes means every scope but those given only when named (ONLY_WHEN_NAMED:
    `inbound:write`). Unknown scopes raise ValueError.
    """
    chosen = list(dict.fromkeys(scopes)) if scopes else list(DEFAULT_SCOPES)
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=_digest(key), scopes=chosen)
    db.session.add(row)
    db.session.flush()
    return row, key


@dataclass(frozen=True, slots=True)
class AuthenticatedKey:
    """What a request needs of its key: which one (for idempotency records) and its scopes."""

    id: int
    name: str
    scopes: frozenset[str]


# A live key is looked up once per process every CACHE_SECONDS, not on every request, so a
# revocation written by another process takes up to this long to be refused there (in the
# process that revokes it through the ORM, at once). Unknown keys are never cached.
CACHE_SECONDS = 5.0
_CACHE_LIMIT = 1000
_CACHE = "mailer.api_key_cache"
_by_digest = select(ApiKey).where(ApiKey.key_hash == bindparam("digest"))


def _cache() -> dict[str, tuple[float, AuthenticatedKey]]:
    return current_app.extensions.setdefault(_CACHE, {})


def authenticate(key: str) -> AuthenticatedKey | None:
    """The live key for a presented key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    digest = _digest(key)
    cache = _cache()
    now = time.monotonic()
    hit = cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    row = db.session.scalar(_by_digest, {"digest": digest})
    if row is None or row.revoked_at is not None:
        cache.pop(digest, None)
        return None
    found = AuthenticatedKey(row.id, row.name, frozenset(row.scopes or ()))
    _note_use(row.id, row.last_used_at)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[digest] = (now + CACHE_SECONDS, found)
    return found


# How fresh `last_used_at` is kept. It is checked only when the key is read from the
# database (every CACHE_SECONDS at most, per process), and written only when the stored
# time is older than this: a busy key costs one UPDATE a minute, not one per request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _note_use(key_id: int, last_used_at: dt.datetime | None) -> None:
    """Record that the key was used now, unless the stored time is recent enough.

    The write stands alone (its own short transaction on the engine, beside the request's
    session), so a request that fails or only reads still records its key's use; it is the
    same when run twice (the condition skips a time another process has just written). A
    failure is logged, never the request's: a key's last use is a help to the operator, not
    a reason to refuse work.
    """
    now = utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    stale = now - LAST_USED_RESOLUTION
    # Core, not the ORM: no mapper event, so this process's cache of keys stays.
    statement = (update(ApiKey.__table__)
                 .where(ApiKey.__table__.c.id == key_id,
                        or_(ApiKey.__table__.c.last_used_at.is_(None),
                            ApiKey.__table__.c.last_used_at < stale))
                 .values(last_used_at=now))

    try:
        with db.engine.begin() as connection:
            connection.execute(statement)
    except DBAPIError:
        log.warning("api key last use not recorded key_id=%s", key_id, exc_info=True)


def list_keys() -> list[ApiKey]:
    """Every key ever issued, live and revoked, oldest first (never the key itself)."""
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(key_id: int) -> tuple[ApiKey, bool]:
    """Revoke a key: refused at once in this process and within CACHE_SECONDS everywhere.

    Returns the key and whether this call revoked it (False: it was revoked already).
    Raises NotFound for an id no key has. The caller commits.
    """
    row = db.session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"There is no API key {key_id}.")
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    db.session.flush()
    forget_cached_keys()
    return row, True


def forget_cached_keys() -> None:
    """Drop this process's cached keys (a key was revoked or changed here)."""
    if has_app_context():
        _cache().clear()


@event.listens_for(ApiKey, "after_update")
@event.listens_for(ApiKey, "after_delete")
def _key_changed(_mapper: Any, _connection: Any, _target: ApiKey) -> None:
    forget_cached_keys()
