"""Signed tokens for links in mails: one signer, a purpose per use, key rotation.

The purpose is the salt, so a token made for one purpose never verifies for
another. Tokens are signed with the newest key of MAILER_SECRET_KEYS and
verified with any listed key, so rotating keys keeps old links working.
"""

from __future__ import annotations

import enum
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class Purpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"


class TokenInvalid(Exception):
    """The token is malformed, forged, or made for another purpose."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is older than its purpose allows."""

    def __init__(self, payload: Any) -> None:
        super().__init__("token expired")
        self.payload = payload


def _serializer(purpose: Purpose) -> URLSafeTimedSerializer:
    keys = current_app.config["MAILER_SECRET_KEYS"]
    return URLSafeTimedSerializer(keys, salt=f"mailer.{purpose.value}")


def sign(purpose: Purpose, payload: Any) -> str:
    """Return a URL-safe token carrying `payload` (JSON-serializable) for `purpose`."""
    return _serializer(purpose).dumps(payload)


def verify(purpose: Purpose, token: str, max_age: float | None = None) -> Any:
    """Return the payload of a token made for `purpose`; raise TokenInvalid or TokenExpired."""
    serializer = _serializer(purpose)
    try:
        return serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        payload = serializer.loads_unsafe(token)[1]
        raise TokenExpired(payload) from exc
    except BadSignature as exc:
        raise TokenInvalid("token invalid") from exc
