"""Facts about this installation kept in its database: the address-hash key's fingerprint.

Suppressions exist only as HMAC of addresses under the address-hash key
(address_hash_key). A different key (MAILER_ADDRESS_HASH_KEY changed, or
the instance/ file of a development install lost) would silently forget every one of them.
So the first process to use the database stores a fingerprint of the key (an HMAC of a fixed
label under the key, never the key), and every process compares its own key with it once,
before its first use of addresses: the web app at its first request, the worker, `mailer
dev` and `mailer import` at start. A mismatch refuses to run.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from hashlib import sha256
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import String, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mailer.errors import MailerError
from mailer.extensions import db
from mailer.settings import SettingsError

log = logging.getLogger(__name__)

ADDRESS_HASH_KEY_FINGERPRINT = "address_hash_key_fingerprint"
# A label no address normal form can equal, so the fingerprint is never an address's hash.
_FINGERPRINT_LABEL = b"mailer/installation/address-hash-key-fingerprint/v1"
# app.extensions entry: True once checked; the error when the check failed.
_CHECKED = "mailer.installation_checked"
# The development key's file in instance/, beside the signing keys' file.
ADDRESS_HASH_KEY_FILE = "address_hash_key"


class Installation(db.Model):
    """One named fact about the installation (name/value rows)."""

    __tablename__ = "installation"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class AddressHashKeyChanged(SettingsError):
    """The address-hash key is not the one this database was set up with."""

    def __init__(self) -> None:
        super().__init__(
            "the address-hash key is not the one this database was set up with, so every "
            "suppression (bounced, complained, erased, ...) would be forgotten: "
            "MAILER_ADDRESS_HASH_KEY was set or changed, or instance/address_hash_key was "
            "lost. Set MAILER_ADDRESS_HASH_KEY back to its old value; an install from before "
            "that setting gets it from `flask --app wsgi mailer legacy-address-hash-key` "
            "(see README, Deploying)."
        )


class ServiceMisconfigured(MailerError):
    """What the web app answers while its settings refuse to run (details only in the log)."""

    status = 503
    code = "service_misconfigured"
    message = "The service is not configured correctly; its operator has been told in the log."


def fingerprint(key: bytes) -> str:
    """The stored stand-in for `key`: HMAC-SHA256 of a fixed label under it (hex)."""
    return hmac.new(key, _FINGERPRINT_LABEL, sha256).hexdigest()


def check(app: Flask | None = None) -> None:
    """Make sure this process's address-hash key is the database's; raise AddressHashKeyChanged
    if not. Needs an app context.

    Once per process: after a pass (or a refusal, which is raised again) no query is made.
    The first process on a database records the fingerprint. A database without the table
    (not migrated yet, e.g. before `flask db upgrade`) is not checked, and checked again at the
    next call.
    """
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get(_CHECKED)
    if state is True:
        return
    if isinstance(state, AddressHashKeyChanged):
        raise state
    expected = fingerprint(address_hash_key())
    stored = _stored_or_record(expected)
    if stored is None:
        return  # no table yet
    if not hmac.compare_digest(stored, expected):
        error = AddressHashKeyChanged()
        app.extensions[_CHECKED] = error
        raise error
    app.extensions[_CHECKED] = True


def _stored_or_record(expected: str) -> str | None:
    """The stored fingerprint, recording `expected` when there is none; None without table.

    Its own connection and transaction, so a request's or command's session is untouched.
    """
    table = Installation.__table__
    query = select(table.c.value).where(table.c.name == ADDRESS_HASH_KEY_FINGERPRINT)
    try:
        with db.engine.begin() as connection:
            if not inspect(connection).has_table(table.name):
                return None
            stored = connection.scalar(query)
            if stored is None:
                connection.execute(table.insert().values(name=ADDRESS_HASH_KEY_FINGERPRINT,
                                                         value=expected))
                stored = expected
    except IntegrityError:
        # Another process recorded it first (its key may differ): read what it stored.
        with db.engine.connect() as connection:
            stored = connection.scalar(query)
    return stored


def stored_fingerprint() -> str | None:
    """The fingerprint this database was set up with; None before its first use or its
    migration. Needs an app context."""
    table = Installation.__table__
    with db.engine.connect() as connection:
        if not inspect(connection).has_table(table.name):
            return None
        return connection.scalar(
            select(table.c.value).where(table.c.name == ADDRESS_HASH_KEY_FINGERPRINT))


def is_legacy_install(app: Flask) -> bool:
    """True when this database's fingerprint is that of the key installs before
    MAILER_ADDRESS_HASH_KEY derived from their first signing key."""
    stored = stored_fingerprint()
    legacy = legacy_address_hash_key(app.config["MAILER_SECRET_KEYS"][0])
    return stored is not None and hmac.compare_digest(stored, fingerprint(key_bytes(legacy)))


def development_address_hash_key(app: Flask) -> str:
    """The address-hash key kept in instance/ when MAILER_ADDRESS_HASH_KEY is unset
    (development and tests; production refuses to start without the setting).

    Made once: for a database set up before the setting existed (its fingerprint is the
    derived key's), the file is written with that derived key, so its suppressions stay;
    otherwise with a new random key. Needs an app context.
    """
    path = Path(app.instance_path) / ADDRESS_HASH_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        legacy = is_legacy_install(app)
        value = (legacy_address_hash_key(app.config["MAILER_SECRET_KEYS"][0]) if legacy
                 else secrets.token_urlsafe(48))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this checkout wrote it first: use theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
            if legacy:
                log.warning("address-hash key: this database's key was derived from the "
                            "first signing key; it is now kept in %s", path)
    return path.read_text().strip()


def forget_check(app: Flask) -> None:
    """Let the next check() query again (tests that change a key under a running app)."""
    app.extensions.pop(_CHECKED, None)


def _check_before_request() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    known = isinstance(app.extensions.get(_CHECKED), AddressHashKeyChanged)
    try:
        check(app)
    except AddressHashKeyChanged as exc:
        if not known:  # the operator's log gets the reason once, visitors only a 503
            log.error("refusing to serve: %s", exc)
        raise ServiceMisconfigured() from None


def register(app: Flask) -> None:
    """Check the key before the web app's first request (then a dictionary look-up each)."""
    app.before_request(_check_before_request)


def address_hash_key() -> bytes:
    """The key of the keyed address hash.

    It must never change, or every suppression is lost, so it is not rotated with the
    signing keys and never derived from one: MAILER_ADDRESS_HASH_KEY (required in
    production), else, in development and tests, the key kept in instance/ (see
    development_address_hash_key). A value `hex:<64 hex digits>` is
    the key's bytes: the form `mailer legacy-address-hash-key` prints for an install whose
    key was once derived from its first signing key.
    """
    explicit = current_app.config.get("MAILER_ADDRESS_HASH_KEY")
    if explicit:
        return key_bytes(explicit)
    cached = current_app.extensions.get("mailer.address_hash_key")
    if cached is None:
        cached = key_bytes(development_address_hash_key(
            current_app._get_current_object()))  # type: ignore[attr-defined]
        current_app.extensions["mailer.address_hash_key"] = cached
    return cached


HEX_PREFIX = "hex:"


def key_bytes(value: str) -> bytes:
    """The bytes of an address-hash key as written in the setting or the instance file."""
    if value.startswith(HEX_PREFIX):
        try:
            return bytes.fromhex(value[len(HEX_PREFIX):])
        except ValueError:
            raise SettingsError("MAILER_ADDRESS_HASH_KEY starts with 'hex:' but the rest is "
                                "no even number of hex digits") from None
    return value.encode()


def legacy_address_hash_key(oldest_signing_key: str) -> str:
    """The key that installs before MAILER_ADDRESS_HASH_KEY derived from their first signing
    key, in the setting's `hex:` form: what such an install sets once to keep its
    suppressions (README, Deploying)."""
    derived = hmac.new(oldest_signing_key.encode(), b"mailer/address-hash/v1",
                       sha256).digest()
    return HEX_PREFIX + derived.hex()
