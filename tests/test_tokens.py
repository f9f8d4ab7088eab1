"""Signed tokens: purposes never cross, rotated keys still verify, expiry is enforced."""

from __future__ import annotations

import time

import pytest

from mailer import tokens
from mailer.tokens import Purpose


def test_round_trip():
    token = tokens.sign(Purpose.UNSUBSCRIBE, {"h": "abc", "t": 3})
    assert tokens.verify(Purpose.UNSUBSCRIBE, token) == {"h": "abc", "t": 3}


def test_a_token_for_one_purpose_never_verifies_for_another():
    token = tokens.sign(Purpose.CONFIRM, {"h": "abc"})
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(Purpose.UNSUBSCRIBE, token)


def test_tampered_token_is_invalid():
    token = tokens.sign(Purpose.UNSUBSCRIBE, {"h": "abc"})
    with pytest.raises(tokens.TokenInvalid):
        swapped = "A" if token[-2] != "A" else "B"
        tokens.verify(Purpose.UNSUBSCRIBE, token[:-2] + swapped + token[-1])


def test_links_signed_with_an_older_key_stay_valid(app):
    keys = app.config["MAILER_SECRET_KEYS"]
    old_token = tokens.sign(Purpose.UNSUBSCRIBE, {"h": "abc"})
    app.config["MAILER_SECRET_KEYS"] = [*keys, "newest-key"]
    try:
        assert tokens.verify(Purpose.UNSUBSCRIBE, old_token) == {"h": "abc"}
        new_token = tokens.sign(Purpose.UNSUBSCRIBE, {"h": "abc"})
        app.config["MAILER_SECRET_KEYS"] = keys  # the newest key withdrawn
        with pytest.raises(tokens.TokenInvalid):
            tokens.verify(Purpose.UNSUBSCRIBE, new_token)
    finally:
        app.config["MAILER_SECRET_KEYS"] = keys


def test_expired_token_says_so_and_keeps_its_payload():
    token = tokens.sign(Purpose.CONFIRM, {"h": "abc"})
    time.sleep(1.1)
    with pytest.raises(tokens.TokenExpired) as caught:
        tokens.verify(Purpose.CONFIRM, token, max_age=0)
    assert caught.value.payload == {"h": "abc"}
