"""Issuing and checking API keys."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from mailer.apikeys.models import ApiKey
from mailer.extensions import db

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
}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def issue(name: str, scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    """Create a key (256 random bits) and return its row and the key, which is never stored.

    No scopes means every scope. Unknown scopes raise ValueError.
    """
    chosen = list(dict.fromkeys(scopes)) if scopes else list(SCOPES)
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=_digest(key), scopes=chosen)
    db.session.add(row)
    db.session.flush()
    return row, key


def authenticate(key: str) -> ApiKey | None:
    """The live key row for a presented key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(key)))
    if row is None or row.revoked_at is not None:
        return None
    return row
