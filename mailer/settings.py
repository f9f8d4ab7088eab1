"""Resolve the settings that have computed defaults: database URL, secret keys, derived keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from flask import Flask, current_app

SECRET_FILE = "secret_keys"


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message names the variable."""


def _database_url(app: Flask) -> str:
    url = app.config.get("MAILER_DATABASE_URL")
    if not url:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(app.instance_path) / 'mailer.db'}"
    # Operators paste libpq URLs; SQLAlchemy needs the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _development_keys(app: Flask) -> list[str]:
    """Generate a signing key once into instance/, so links survive restarts in development."""
    path = Path(app.instance_path) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def resolve(app: Flask) -> None:
    """Fill the Flask and SQLAlchemy settings from the MAILER_* ones; fail with a clear message."""
    app.config["SQLALCHEMY_DATABASE_URI"] = _database_url(app)
    keys = list(app.config.get("MAILER_SECRET_KEYS") or [])
    if not keys:
        if app.config.get("ENV_NAME") == "production":
            raise SettingsError("MAILER_SECRET_KEYS must be set in production (comma-separated).")
        keys = _development_keys(app)
    app.config["MAILER_SECRET_KEYS"] = keys
    # Flask's own signing (sessions, CSRF) uses the newest key.
    app.config["SECRET_KEY"] = keys[-1]
    app.config["RATELIMIT_ENABLED"] = bool(app.config.get("MAILER_RATELIMIT_ENABLED", True))
    app.config["RATELIMIT_STORAGE_URI"] = app.config.get("MAILER_RATELIMIT_STORAGE_URL",
                                                         "memory://")
    https = str(app.config.get("MAILER_BASE_URL", "")).startswith("https://")
    app.config["SESSION_COOKIE_SECURE"] = https
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


def address_hash_key() -> bytes:
    """The key of the keyed address hash.

    It must never change, or every suppression is lost, so it is not rotated with
    the signing keys: MAILER_ADDRESS_HASH_KEY when set, else derived from the
    oldest signing key (the first listed).
    """
    explicit = current_app.config.get("MAILER_ADDRESS_HASH_KEY")
    if explicit:
        return explicit.encode()
    cached = current_app.extensions.get("mailer.address_hash_key")
    if cached is None:
        oldest = current_app.config["MAILER_SECRET_KEYS"][0].encode()
        cached = hmac.new(oldest, b"mailer/address-hash/v1", hashlib.sha256).digest()
        current_app.extensions["mailer.address_hash_key"] = cached
    return cached
