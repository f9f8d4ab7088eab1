"""Resolve the settings that have computed defaults: database URL, secret keys, derived keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from config import ConfigError
from mailer.database import engine_options

SECRET_FILE = "secret_keys"


class SettingsError(ConfigError):
    """A setting is missing or wrong; the message is one line naming the variable.

    A ConfigError, so wsgi.py reports it as one line and the service does not start.
    """


def _database_url(app: Flask) -> str:
    url = (app.config.get("MAILER_DATABASE_URL") or "").strip()
    if not url:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(app.instance_path) / 'mailer.db'}"
    # Operators paste libpq URLs; SQLAlchemy needs the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
            break
    _check_database_url(url)
    return url


def _check_database_url(url: str) -> None:
    """Refuse a URL SQLAlchemy cannot use now, rather than at the first request.

    Messages never echo the URL: it may hold a password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError("MAILER_DATABASE_URL is not a database URL; expected "
                            "postgresql+psycopg://user@host/db or sqlite:///path") from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise SettingsError(f"MAILER_DATABASE_URL names an unknown database kind "
                            f"{parsed.drivername!r}; expected postgresql+psycopg:// or "
                            f"sqlite://") from None
    except ImportError as exc:
        raise SettingsError(f"MAILER_DATABASE_URL needs the driver {exc.name or '?'!s}, which "
                            f"is not installed; use postgresql+psycopg:// or sqlite://") from None


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
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}))
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
