"""Configuration classes: every setting comes from the environment (12-factor).

Nothing here reads the environment at import time. `Config.from_env()` builds a
configuration object from `os.environ` (or a mapping given for tests), and
`mailer.create_app()` loads it with `app.config.from_object()`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailer.flags import parse_flag

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
DEV_SMTP_URL = "smtp://127.0.0.1:8025"
# Shortest signing key and address-hash key production accepts: 32 characters of a random
# key (as `secrets.token_urlsafe(32)` makes) are out of reach of a brute-force search.
MIN_KEY_LENGTH = 32
LOG_FORMATS = ("json", "text")
# The smallest k an audience report may use (MAILER_REPORT_MIN_GROUP).
REPORT_MIN_GROUP_FLOOR = 5


class ConfigError(ValueError):
    """A setting is wrong; the message is one line naming the variable and what is wrong.

    wsgi.py turns it into that one line on standard error and exit status 2, so the web app,
    the worker and every `flask --app wsgi ...` command refuse to start without a traceback.
    """


# A DKIM selector is one or more DNS labels (RFC 6376 3.1); a domain is a host name.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"(?i){_LABEL}(?:\.{_LABEL})*")


def _flag(value: str | None, default: bool, name: str = "the flag") -> bool:
    # Anything but a known spelling is refused: "maybe" once meant "on", silently.
    if value is None or value.strip() == "":
        return default
    flag = parse_flag(value)
    if flag is None:
        raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")
    return flag


def _int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *,
           minimum: float | None = None, positive: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    if positive and not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    if minimum is not None and not minimum <= value < math.inf:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _text(env: Mapping[str, str], name: str, *, lines: bool = False) -> str | None:
    """The trimmed value, or None when unset; control characters (a line break in a header,
    an escape sequence in a log) are refused, line breaks only where `lines` allows them."""
    value = (env.get(name) or "").strip()
    if not value:
        return None
    allowed = "\n\r\t" if lines else ""
    if not all(c.isprintable() or c in allowed for c in value):
        what = "control characters" if lines else "line breaks or control characters"
        raise ConfigError(f"{name} must be plain text without {what}")
    return value


def _origin_url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """An http(s) URL with a host and optionally a path, without a trailing slash: links in
    mails are built by appending paths to it, so anything else makes links that cannot work."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (raises ValueError on a port that is no number)
    except ValueError:
        raise ConfigError(f"{name} must be an http:// or https:// URL like "
                          f"https://shop.example, got {raw!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, like "
                          f"https://shop.example, got {raw!r}")
    if parts.query or parts.fragment or parts.username is not None or any(
            c.isspace() or not c.isprintable() for c in raw):
        raise ConfigError(f"{name} must be a plain origin (and path): no user, ?query, "
                          f"#fragment or spaces; got {raw!r}")
    return raw.rstrip("/")


def _from_address(env: Mapping[str, str], name: str) -> str | None:
    """`Name <addr@domain>` or `addr@domain`; a bad one would pass accept and fail every mail."""
    from email.utils import getaddresses

    from email_validator import EmailNotValidError, validate_email

    value = _text(env, name)
    if value is None:
        return None
    found = getaddresses([value])
    address = found[0][1] if len(found) == 1 else ""
    problem = "" if address else "it holds no single address"
    if address:
        local, _, domain = address.rpartition("@")
        try:
            validate_email(address, check_deliverability=False)
        except EmailNotValidError as exc:
            # A relay for local delivery only may take user@localhost; nothing else lacks a dot.
            if not (local and domain.lower() == "localhost"):
                problem = str(exc)
    if problem:
        raise ConfigError(f"{name} must be an address like 'Shop <news@shop.example>' or "
                          f"news@shop.example, got {value!r}: {problem}")
    return value


def _smtp_url(env: Mapping[str, str], name: str, default: str) -> str:
    # The worker's own parser, so what starts is what the worker can use; its messages
    # name the setting and never echo the URL (it may hold a password).
    from mailer.smtp_url import SmtpSettings

    url = (env.get(name) or "").strip() or default
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("memory", "console"):
        return url
    if scheme not in ("smtp", "smtps"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise ConfigError(f"{name} must start with smtp://, smtps://, memory:// or console://, "
                          f"not {shown}")
    try:
        SmtpSettings.from_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return url


def _directory(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip()
    if not value:
        return None
    if not Path(value).is_dir():
        raise ConfigError(f"{name} must be an existing directory, got {value!r}")
    return value


def _dkim(env: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """Key file, selector and domain: all three or none, the key a readable PEM private key."""
    names = ("MAILER_DKIM_KEY_FILE", "MAILER_DKIM_SELECTOR", "MAILER_DKIM_DOMAIN")
    key_file, selector, domain = ((env.get(n) or "").strip() or None for n in names)
    given = [key_file, selector, domain]
    if not any(given):
        return None, None, None
    if not all(given):
        missing = [n for n, v in zip(names, given, strict=True) if not v]
        raise ConfigError(f"DKIM needs all three settings; missing: {', '.join(missing)}")
    assert key_file is not None and selector is not None and domain is not None
    try:
        pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"MAILER_DKIM_KEY_FILE cannot be read ({exc.strerror}): "
                          f"{key_file!r}") from None
    import dkim.crypto

    try:
        dkim.crypto.parse_pem_private_key(pem)
    except Exception:  # dkimpy raises several types for a file that is no key
        raise ConfigError(f"MAILER_DKIM_KEY_FILE holds no PEM private key: {key_file!r}") from None
    for name, value in (("MAILER_DKIM_SELECTOR", selector), ("MAILER_DKIM_DOMAIN", domain)):
        if not _DNS_NAME.fullmatch(value):
            raise ConfigError(f"{name} must be a DNS name like 'mail' or 'shop.example', "
                              f"got {value!r}")
    return key_file, selector, domain


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    # Flask-Limiter only logs a limit it cannot parse and then limits nothing.
    import limits

    value = (env.get(name) or "").strip() or default
    try:
        limits.parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must be limits like '10 per minute; 100 per day', "
                          f"got {value!r}") from None
    return value


def _storage_url(env: Mapping[str, str], name: str, default: str) -> str:
    from limits.storage import SCHEMES

    value = (env.get(name) or "").strip() or default
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    # Flask-Limiter counts synchronously: the async+ storages are not for it.
    known = sorted(s for s in SCHEMES if not s.startswith("async+"))
    if scheme not in known:
        raise ConfigError(f"{name} must be memory:// or a storage URL like "
                          f"redis://host:6379 (schemes: {', '.join(known)}), got "
                          f"{(scheme + '://') if scheme else 'no scheme'}")
    # The storage's client library, which Flask-Limiter would miss only with a traceback.
    import importlib.util

    module = {"redis": "redis", "rediss": "redis", "valkey": "valkey", "valkeys": "valkey",
              "memcached": "pymemcache", "mongodb": "pymongo"}.get(scheme.split("+")[0])
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f"{name} uses {scheme}://, which needs the Python package "
                          f"{module!r}; install it or use memory://")
    return value


def _optional_rate_limit(env: Mapping[str, str], name: str) -> str | None:
    """A Flask-Limiter limit like '100 per hour', or None (no limit) when unset."""
    if not (env.get(name) or "").strip():
        return None
    return _rate_limit(env, name, "")


def _origins(env: Mapping[str, str], name: str) -> list[str]:
    """Comma-separated web origins (`scheme://host[:port]`, no path), lower-cased as browsers
    send them in the Origin header; none when unset."""
    origins = []
    for raw in (env.get(name) or "").split(","):
        value = raw.strip()
        if not value:
            continue
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if (parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or parts.path not in ("", "/") or parts.query or parts.fragment
                or parts.username is not None):
            raise ConfigError(f"{name} must be comma-separated origins like "
                              f"https://shop.example (scheme, host, optional port; no path), "
                              f"got {value!r}")
        host = parts.hostname.lower()
        host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
        origin = f"{parts.scheme.lower()}://{host}"
        # Browsers leave a scheme's default port out of the Origin header.
        default_port = {"http": 80, "https": 443}[parts.scheme.lower()]
        origins.append(origin if port in (None, default_port) else f"{origin}:{port}")
    return list(dict.fromkeys(origins))


def _address_list(env: Mapping[str, str], name: str) -> list[str]:
    """Comma-separated email addresses, each checked (a typo would silently match nobody)."""
    from email.utils import parseaddr

    addresses = []
    for item in (env.get(name) or "").split(","):
        if not item.strip():
            continue
        address = parseaddr(item.strip())[1]
        if "@" not in address or address != item.strip():
            raise ConfigError(f"{name} must be comma-separated email addresses, got {item!r}")
        addresses.append(address)
    return addresses


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or "").strip().upper() or default
    levels = [n for n in logging.getLevelNamesMapping() if n not in ("WARN", "FATAL")]
    if value not in logging.getLevelNamesMapping():
        raise ConfigError(f"{name} must be one of {', '.join(levels)}, got {value!r}")
    return value


def _address_hash_key(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip() or None
    # `hex:` + the key's bytes is the form the legacy-address-hash-key command prints.
    if value is not None and value.startswith("hex:"):
        digits = value[4:]
        if not digits or len(digits) % 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ConfigError(f"{name} starts with 'hex:' but the rest is no even number of "
                              f"hex digits")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def refuse_unsafe_production(config: Config, env: Mapping[str, str]) -> None:
    """Raise ConfigError, naming the setting, for the first setting production must not run
    with (the contract's list, and nothing else: other doubtful choices only get a warning,
    see mailer.logs.warn_doubtful_settings).

    `env` is the raw environment: an unset MAILER_SMTP_URL must be told apart from the
    development default it would otherwise fall back to.
    """
    from mailer.delivery.transport import SmtpSettings

    keys = config.MAILER_SECRET_KEYS
    if not keys:
        raise ConfigError("MAILER_SECRET_KEYS must be set in production (comma-separated).")
    for position, key in enumerate(keys, start=1):
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"MAILER_SECRET_KEYS: key {position} of {len(keys)} has "
                              f"{len(key)} characters; production needs at least "
                              f"{MIN_KEY_LENGTH} in every signing key")
    hash_key = config.MAILER_ADDRESS_HASH_KEY or ""
    if len(hash_key) < MIN_KEY_LENGTH:
        what = "is not set" if not hash_key else f"has {len(hash_key)} characters"
        raise ConfigError(f"MAILER_ADDRESS_HASH_KEY {what}; production needs a key of at least "
                          f"{MIN_KEY_LENGTH} characters (an install from before this setting "
                          f"prints its key with `MAILER_ENV=development flask --app wsgi mailer "
                          f"legacy-address-hash-key`; README, Deploying)")
    if not config.MAILER_BASE_URL.lower().startswith("https://"):
        raise ConfigError("MAILER_BASE_URL must be an https:// URL in production (every link "
                          "in a mail and the console's cookies depend on it)")
    if not (env.get("MAILER_SMTP_URL") or "").strip():
        raise ConfigError("MAILER_SMTP_URL must be set in production (the default is the "
                          "development capture server)")
    url = config.MAILER_SMTP_URL
    if url.split(":", 1)[0].lower() in ("smtp", "smtps"):
        smtp = SmtpSettings.from_url(url)
        if smtp.username and smtp.password and not (smtp.implicit_tls or smtp.starttls):
            raise ConfigError("MAILER_SMTP_URL sends a user and password without TLS; use "
                              "smtps:// or add ?starttls=1 in production")
        if not smtp.verify_certs:
            raise ConfigError("MAILER_SMTP_URL has ?verify=0; production verifies the relay's "
                              "certificate")
    for name in ("MAILER_FROM", "MAILER_POSTAL_ADDRESS"):
        if not getattr(config, name):
            raise ConfigError(f"{name} must be set in production")


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
    MAILER_LOG_FORMAT = "text"
    MAILER_TRUSTED_PROXIES = 0
    MAILER_METRICS_TOKEN: str | None = None
    MAILER_REPORT_MIN_GROUP = 10
    MAILER_EMBED_ORIGINS: list[str] = []
    MAILER_EMBED_FORM_MAX_AGE = 7 * 24 * 3600
    MAILER_API_CONTACT_LIMIT: str | None = None
    MAILER_API_CONFIRMATION_LIMIT: str | None = None
    # Addresses besides the console users' own that may receive a campaign's test mail.
    MAILER_TEST_RECIPIENTS: list[str] = []
    MAILER_WEBHOOK_ALLOW_PRIVATE = True
    MAILER_WEBHOOK_RETRY_BACKOFF = 30.0
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
        config.MAILER_ADDRESS_HASH_KEY = _address_hash_key(env, "MAILER_ADDRESS_HASH_KEY")
        config.MAILER_TEST_RECIPIENTS = _address_list(env, "MAILER_TEST_RECIPIENTS")
        config.MAILER_BASE_URL = _origin_url(env, "MAILER_BASE_URL", DEFAULT_BASE_URL)
        config.MAILER_SMTP_URL = _smtp_url(env, "MAILER_SMTP_URL", DEV_SMTP_URL)
        config.MAILER_FROM = _from_address(env, "MAILER_FROM")
        config.MAILER_POSTAL_ADDRESS = _text(env, "MAILER_POSTAL_ADDRESS", lines=True)
        config.MAILER_TEMPLATE_DIR = _directory(env, "MAILER_TEMPLATE_DIR")
        config.MAILER_RETRY_BACKOFF = _float(env, "MAILER_RETRY_BACKOFF", 60.0, positive=True)
        (config.MAILER_DKIM_KEY_FILE, config.MAILER_DKIM_SELECTOR,
         config.MAILER_DKIM_DOMAIN) = _dkim(env)
        config.MAILER_RATELIMIT_ENABLED = _flag(env.get("MAILER_RATELIMIT_ENABLED"), True,
                                                "MAILER_RATELIMIT_ENABLED")
        config.MAILER_MAX_RATE = _float(env, "MAILER_MAX_RATE", 0.0)
        # A negative or endless rate would silently mean "no limit"; say so instead.
        if not 0 <= config.MAILER_MAX_RATE < float("inf"):
            raise ConfigError(f"MAILER_MAX_RATE must be 0 (no limit) or a positive number of "
                             f"messages per second, got {config.MAILER_MAX_RATE!r}")
        config.MAILER_SMTP_CONNECTIONS = _int(env, "MAILER_SMTP_CONNECTIONS", 4, minimum=1)
        config.MAILER_MAX_ATTEMPTS = _int(env, "MAILER_MAX_ATTEMPTS", 10, minimum=1)
        # Under a second, a lease could lapse between its renewals and a second worker take
        # the same mail.
        config.MAILER_WORKER_LEASE = _float(env, "MAILER_WORKER_LEASE", 30.0, minimum=1)
        config.MAILER_WORKER_BATCH = _int(env, "MAILER_WORKER_BATCH", 200, minimum=1)
        # Webhook URLs: https:// to public addresses only in production, unless allowed.
        config.MAILER_WEBHOOK_ALLOW_PRIVATE = _flag(
            env.get("MAILER_WEBHOOK_ALLOW_PRIVATE"), cls.ENV_NAME != "production",
            "MAILER_WEBHOOK_ALLOW_PRIVATE")
        config.MAILER_WEBHOOK_RETRY_BACKOFF = _float(env, "MAILER_WEBHOOK_RETRY_BACKOFF", 30.0,
                                                     positive=True)
        config.MAILER_CONFIRM_MAX_AGE = _int(env, "MAILER_CONFIRM_MAX_AGE", 7 * 24 * 3600,
                                             minimum=1)
        config.MAILER_BRAND_NAME = _text(env, "MAILER_BRAND_NAME") or "mailer"
        config.MAILER_BRAND_COLOR = env.get("MAILER_BRAND_COLOR") or "#1d4ed8"
        # It is written into the pages' CSS: only a plain colour may pass.
        if not re.fullmatch(r"#[0-9a-fA-F]{3,8}", config.MAILER_BRAND_COLOR):
            raise ConfigError(f"MAILER_BRAND_COLOR must be a hex colour like #1d4ed8, "
                             f"got {config.MAILER_BRAND_COLOR!r}")
        config.MAILER_SHOP_URL = _origin_url(env, "MAILER_SHOP_URL", None)
        config.MAILER_REFERRAL_DAILY_CAP = _int(env, "MAILER_REFERRAL_DAILY_CAP", 5, minimum=0)
        config.MAILER_RATELIMIT_STORAGE_URL = _storage_url(env, "MAILER_RATELIMIT_STORAGE_URL",
                                                           "memory://")
        config.MAILER_PAGE_RATE_LIMIT = _rate_limit(env, "MAILER_PAGE_RATE_LIMIT",
                                                    "10 per minute; 100 per day")
        config.MAILER_LOG_LEVEL = _log_level(env, "MAILER_LOG_LEVEL", "INFO")
        config.MAILER_LOG_FORMAT = _choice(env, "MAILER_LOG_FORMAT", LOG_FORMATS,
                                           "json" if cls.ENV_NAME == "production" else "text")
        config.MAILER_TRUSTED_PROXIES = _int(env, "MAILER_TRUSTED_PROXIES", 0, minimum=0)
        config.MAILER_METRICS_TOKEN = _text(env, "MAILER_METRICS_TOKEN")
        # prometheus_client's multiprocess mode writes there at the first count: a missing
        # directory would fail that request (or delivery) instead of the start.
        _directory(env, "PROMETHEUS_MULTIPROC_DIR")
        # Under 5, a shown group is small enough to single people out (mailer.reports).
        config.MAILER_REPORT_MIN_GROUP = _int(env, "MAILER_REPORT_MIN_GROUP", 10,
                                              minimum=REPORT_MIN_GROUP_FLOOR)
        config.MAILER_EMBED_ORIGINS = _origins(env, "MAILER_EMBED_ORIGINS")
        config.MAILER_EMBED_FORM_MAX_AGE = _int(env, "MAILER_EMBED_FORM_MAX_AGE",
                                                7 * 24 * 3600, minimum=60)
        config.MAILER_API_CONTACT_LIMIT = _optional_rate_limit(env, "MAILER_API_CONTACT_LIMIT")
        config.MAILER_API_CONFIRMATION_LIMIT = _optional_rate_limit(
            env, "MAILER_API_CONFIRMATION_LIMIT")
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
    """Refuses to start with an unsafe setting (see refuse_unsafe_production)."""

    ENV_NAME = "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        config = super().from_env(env)
        refuse_unsafe_production(config, env)
        return config


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
        raise ConfigError(f"MAILER_ENV must be one of {', '.join(CONFIGS)}, "
                          f"got {name!r}") from exc
    return config_class.from_env(env)
