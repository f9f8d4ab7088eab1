"""The cached token signer writes exactly what itsdangerous writes, and reads what it reads."""

from __future__ import annotations

import hashlib
from unittest import mock

import pytest
from itsdangerous import URLSafeTimedSerializer

from mailer import tokens
from mailer.tokens import Purpose

KEYS = ("an-older-signing-key-of-some-length", "the-newest-signing-key")
PAYLOADS = [
    {"h": hashlib.sha256(b"a@example.org").hexdigest(), "t": 7},
    {"h": hashlib.sha256(b"b@example.org").hexdigest(), "t": None},
    {"h": "abc"},
    ["ü", 1, 2.5, None, True],
    "x" * 600,  # long enough for itsdangerous to compress it
]


def plain(keys: tuple[str, ...], purpose: Purpose) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(keys), salt=f"mailer.{purpose.value}")


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("payload", PAYLOADS)
def test_tokens_are_byte_for_byte_those_of_itsdangerous(purpose, payload):
    with mock.patch("time.time", return_value=1_764_000_000.0):
        ours = tokens._cached_serializer(purpose, KEYS).dumps(payload)
        theirs = plain(KEYS, purpose).dumps(payload)
    assert ours == theirs
    assert plain(KEYS, purpose).loads(ours) == payload
    assert tokens._cached_serializer(purpose, KEYS).loads(theirs) == payload


def test_a_token_of_an_older_key_verifies_and_a_forged_one_does_not():
    old = plain(KEYS[:1], Purpose.UNSUBSCRIBE).dumps({"h": "abc"})
    assert tokens._cached_serializer(Purpose.UNSUBSCRIBE, KEYS).loads(old) == {"h": "abc"}
    stranger = plain(("not-a-key-of-ours",), Purpose.UNSUBSCRIBE).dumps({"h": "abc"})
    with pytest.raises(Exception, match="Signature"):
        tokens._cached_serializer(Purpose.UNSUBSCRIBE, KEYS).loads(stranger)


def test_the_serializer_follows_the_configured_keys(app):
    keys = app.config["MAILER_SECRET_KEYS"]
    first = tokens._serializer(Purpose.UNSUBSCRIBE)
    assert tokens._serializer(Purpose.UNSUBSCRIBE) is first  # made once, then reused
    app.config["MAILER_SECRET_KEYS"] = [*keys, "another-key"]
    try:
        assert tokens._serializer(Purpose.UNSUBSCRIBE) is not first
        token = tokens.sign(Purpose.UNSUBSCRIBE, {"h": "abc"})
        assert plain(("another-key",), Purpose.UNSUBSCRIBE).loads(token) == {"h": "abc"}
    finally:
        app.config["MAILER_SECRET_KEYS"] = keys
