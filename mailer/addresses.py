"""Email addresses: one normal form, and the keyed hash that stands in for an address."""

from __future__ import annotations

import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email

from mailer.installation import address_hash_key

MAX_ADDRESS_LENGTH = 254


class InvalidAddress(ValueError):
    """The text is not a usable email address; the message says why."""


def normalize(raw: str) -> str:
    """Return the one stored form of an address, or raise InvalidAddress.

    Syntax is checked by email-validator (no DNS lookups). The domain is in
    IDNA (ASCII) form where possible. The whole address is lower-cased: mailbox
    providers treat local parts case-insensitively, and a suppression must match
    every spelling of the same mailbox.
    """
    if not isinstance(raw, str):
        raise InvalidAddress("An email address must be text.")
    text = raw.strip()
    if not text:
        raise InvalidAddress("An email address is required.")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress("An email address is at most 254 characters.")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc
    address = result.ascii_email or result.normalized
    return address.lower()


def keyed_hash(normalized_address: str) -> str:
    """HMAC-SHA256 of a normalized address under the address-hash key, as hex."""
    return hmac.new(
        address_hash_key(), normalized_address.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def hash_of(raw: str) -> str:
    """Normalize, then hash: the key under which marks about an address are kept."""
    return keyed_hash(normalize(raw))
