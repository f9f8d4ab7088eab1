"""Signed tokens for links in mails: one signer, a purpose per use, key rotation.

The purpose is the salt, so a token made for one purpose never verifies for
another. Tokens are signed with the newest key of MAILER_SECRET_KEYS and
verified with any listed key, so rotating keys keeps old links working.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from functools import lru_cache
from typing import Any

from flask import current_app
from itsdangerous import (
    BadSignature,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.signer import HMACAlgorithm


class Purpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"
    # The embeddable signup form's hidden token (mailer.pages.embed): it stands in for the
    # session's CSRF token on another site's page, and says which topics the form offers.
    EMBED_FORM = "embed_form"


class TokenInvalid(Exception):
    """The token is malformed, forged, or made for another purpose."""


class TokenExpired(TokenInvalid):
    """The token was genuine but is older than its purpose allows."""

    def __init__(self, payload: Any) -> None:
        super().__init__("token expired")
        self.payload = payload


class _Signer(TimestampSigner):
    """itsdangerous' TimestampSigner, cheaper per token, writing the very same bytes.

    Each key is derived once rather than per call, and the HMAC-SHA1 is computed by a copy
    of a keyed OpenSSL HMAC: itsdangerous hands hmac its own sha1 wrapper, which sends hmac
    down its pure-Python path and rebuilds the key pads for every token.
    tests/messages/test_token_signing.py compares the output with itsdangerous' own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[Any, bytes] = {}
        self._fast = (type(self.algorithm) is HMACAlgorithm
                      and self.digest_method is Signer.default_digest_method)
        self._mac = hmac.new(self.derive_key(), digestmod=hashlib.sha1) if self._fast else None

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key

    def get_signature(self, value: str | bytes) -> bytes:
        if self._mac is None:
            return super().get_signature(value)
        mac = self._mac.copy()  # keyed with the newest key, as derive_key() is
        mac.update(want_bytes(value))
        return base64_encode(mac.digest())


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous' serializer, with its signer made once per salt instead of per call.

    A signer holds nothing but its keys and settings, so sharing one (also between threads)
    signs and verifies exactly as a fresh one would; the worker signs two links per mail.
    """

    default_signer = _Signer

    def __init__(self, secret_key: Any, salt: str) -> None:
        super().__init__(secret_key, salt=salt)
        self._signers: dict[Any, Signer] = {}

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        key = self.salt if salt is None else salt
        signer = self._signers.get(key)
        if signer is None:
            signer = self._signers[key] = super().make_signer(salt)
        return signer


@lru_cache(maxsize=32)
def _cached_serializer(purpose: Purpose, keys: tuple[str, ...]) -> URLSafeTimedSerializer:
    return _Serializer(list(keys), salt=f"mailer.{purpose.value}")


def _serializer(purpose: Purpose) -> URLSafeTimedSerializer:
    # Keyed by the key list itself, so a change of MAILER_SECRET_KEYS takes effect at once.
    keys = current_app.config["MAILER_SECRET_KEYS"]
    return _cached_serializer(purpose, tuple(keys))


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
