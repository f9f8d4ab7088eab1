"""Configuration classes: every setting comes from the environment (12-factor).

Nothing here reads the environment at import time. `Config.from_env()` builds a
configuration object from `os.environ` (or a mapping given for tests), and
`mailer.create_app()` loads it with `app.config.from_object()`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
DEV_SMTP_URL = "smtp://127.0.0.1:8025"


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


class Config:
    """Settings shared by every environment; see the README for each variable."""

    ENV_NAME = "development"
    TESTING = False

    # Flask and extensions.
    MAX_CONTENT_LENGTH = 1024 * 1024  # API bodies over 1 MB get 413.
    JSON_SORT_KEYS = False
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True}

    API_TITLE = "mailer"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api/v1"
    OPENAPI_JSON_PATH = "openapi.json"

    # Service settings (MAILER_*), filled by from_env().
    MAILER_DATABASE_URL: str | None = None
    MAILER_SECRET_KEYS: list[str] = []
    MAILER_ADDRESS_HASH_KEY: str | None = None
    MAILER_BASE_URL = DEFAULT_BASE_URL
    MAILER_SMTP_URL = DEV_SMTP_URL
    MAILER_FROM: str | None = None
    MAILER_POSTAL_ADDRESS: str | None = None
    MAILER_TEMPLATE_DIR: str | None = None
    MAILER_RETRY_BACKOFF = 60.0
    MAILER_DKIM_KEY_FILE: str | None = None
    MAILER_DKIM_SELECTOR: str | None = None
    MAILER_DKIM_DOMAIN: str | None = None
    MAILER_RATELIMIT_ENABLED = True
    MAILER_MAX_RATE = 0.0
    MAILER_SMTP_CONNECTIONS = 4
    MAILER_MAX_ATTEMPTS = 10
    MAILER_WORKER_LEASE = 30.0
    MAILER_WORKER_BATCH = 200
    MAILER_CONFIRM_MAX_AGE = 7 * 24 * 3600
    MAILER_BRAND_NAME = "mailer"
    MAILER_BRAND_COLOR = "#1d4ed8"
    MAILER_SHOP_URL: str | None = None
    MAILER_REFERRAL_DAILY_CAP = 5
    MAILER_RATELIMIT_STORAGE_URL = "memory://"
    MAILER_PAGE_RATE_LIMIT = "10 per minute; 100 per day"
    MAILER_LOG_LEVEL = "INFO"
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session cookie

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Return an instance of this class with every MAILER_* setting read from `environ`."""
        env = os.environ if environ is None else environ
        config = cls()
        config.MAILER_DATABASE_URL = env.get("MAILER_DATABASE_URL") or None
        config.MAILER_SECRET_KEYS = [
            key.strip() for key in env.get("MAILER_SECRET_KEYS", "").split(",") if key.strip()
        ]
        config.MAILER_ADDRESS_HASH_KEY = env.get("MAILER_ADDRESS_HASH_KEY") or None
        config.MAILER_BASE_URL = (env.get("MAILER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        config.MAILER_SMTP_URL = env.get("MAILER_SMTP_URL") or DEV_SMTP_URL
        config.MAILER_FROM = env.get("MAILER_FROM") or None
        config.MAILER_POSTAL_ADDRESS = env.get("MAILER_POSTAL_ADDRESS") or None
        config.MAILER_TEMPLATE_DIR = env.get("MAILER_TEMPLATE_DIR") or None
        config.MAILER_RETRY_BACKOFF = _float(env, "MAILER_RETRY_BACKOFF", 60.0)
        config.MAILER_DKIM_KEY_FILE = env.get("MAILER_DKIM_KEY_FILE") or None
        config.MAILER_DKIM_SELECTOR = env.get("MAILER_DKIM_SELECTOR") or None
        config.MAILER_DKIM_DOMAIN = env.get("MAILER_DKIM_DOMAIN") or None
        config.MAILER_RATELIMIT_ENABLED = _flag(env.get("MAILER_RATELIMIT_ENABLED"), True)
        config.MAILER_MAX_RATE = _float(env, "MAILER_MAX_RATE", 0.0)
        config.MAILER_SMTP_CONNECTIONS = _int(env, "MAILER_SMTP_CONNECTIONS", 4)
        config.MAILER_MAX_ATTEMPTS = _int(env, "MAILER_MAX_ATTEMPTS", 10)
        config.MAILER_WORKER_LEASE = _float(env, "MAILER_WORKER_LEASE", 30.0)
        config.MAILER_WORKER_BATCH = _int(env, "MAILER_WORKER_BATCH", 200)
        config.MAILER_CONFIRM_MAX_AGE = _int(env, "MAILER_CONFIRM_MAX_AGE", 7 * 24 * 3600)
        config.MAILER_BRAND_NAME = env.get("MAILER_BRAND_NAME") or "mailer"
        config.MAILER_BRAND_COLOR = env.get("MAILER_BRAND_COLOR") or "#1d4ed8"
        # It is written into the pages' CSS: only a plain colour may pass.
        if not re.fullmatch(r"#[0-9a-fA-F]{3,8}", config.MAILER_BRAND_COLOR):
            raise ValueError(f"MAILER_BRAND_COLOR must be a hex colour like #1d4ed8, "
                             f"got {config.MAILER_BRAND_COLOR!r}")
        config.MAILER_SHOP_URL = (env.get("MAILER_SHOP_URL") or "").rstrip("/") or None
        config.MAILER_REFERRAL_DAILY_CAP = _int(env, "MAILER_REFERRAL_DAILY_CAP", 5)
        config.MAILER_RATELIMIT_STORAGE_URL = env.get("MAILER_RATELIMIT_STORAGE_URL") or "memory://"
        config.MAILER_PAGE_RATE_LIMIT = (
            env.get("MAILER_PAGE_RATE_LIMIT") or "10 per minute; 100 per day"
        )
        config.MAILER_LOG_LEVEL = (env.get("MAILER_LOG_LEVEL") or "INFO").upper()
        return config


class DevelopmentConfig(Config):
    """The default: SQLite under instance/, secret keys generated once into instance/.

    Mail settings get placeholders so a first look works; production has none.
    """

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        config = super().from_env(environ)
        config.MAILER_FROM = config.MAILER_FROM or "mailer (development) <mailer@localhost>"
        config.MAILER_POSTAL_ADDRESS = (
            config.MAILER_POSTAL_ADDRESS or "Set MAILER_POSTAL_ADDRESS, 1 Example Street, Town"
        )
        return config


class ProductionConfig(Config):
    """Refuses to start without explicit secret keys (see mailer.settings.check)."""

    ENV_NAME = "production"


class TestConfig(Config):
    """Used by the test suite; the database URL is set by the tests."""

    ENV_NAME = "test"
    TESTING = True


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "test": TestConfig,
}


def config_from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Pick the configuration class named by MAILER_ENV (default development) and fill it."""
    env = os.environ if environ is None else environ
    name = (env.get("MAILER_ENV") or "development").strip().lower()
    try:
        config_class = CONFIGS[name]
    except KeyError as exc:
        raise ValueError(f"MAILER_ENV must be one of {sorted(CONFIGS)}, got {name!r}") from exc
    return config_class.from_env(env)
