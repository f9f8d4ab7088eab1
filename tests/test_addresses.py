"""Address normalization and the keyed hash."""

from __future__ import annotations

import pytest

from mailer import addresses


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  ann@example.com  ", "ann@example.com"),
        ("ann@bücher.example", "ann@xn--bcher-kva.example"),
        ("first.last+tag@example.org", "first.last+tag@example.org"),
    ],
)
def test_normal_form(raw, normal):
    assert addresses.normalize(raw) == normal


@pytest.mark.parametrize(
    "raw",
    ["", "plain", "a@", "@example.com", "a b@example.com", "a@exa mple.com", "x" * 250 + "@e.co"],
)
def test_invalid_addresses_are_refused(raw):
    with pytest.raises(addresses.InvalidAddress):
        addresses.normalize(raw)


def test_hash_is_keyed_and_spelling_independent(app):
    one = addresses.hash_of("Ann@Example.com")
    assert one == addresses.hash_of("ann@example.com")
    assert len(one) == 64
    import hashlib

    assert one != hashlib.sha256(b"ann@example.com").hexdigest()


def test_hash_key_survives_rotation_of_signing_keys(app):
    before = addresses.hash_of("ann@example.com")
    keys = app.config["MAILER_SECRET_KEYS"]
    app.config["MAILER_SECRET_KEYS"] = [*keys, "a-brand-new-signing-key"]
    try:
        assert addresses.hash_of("ann@example.com") == before
    finally:
        app.config["MAILER_SECRET_KEYS"] = keys
