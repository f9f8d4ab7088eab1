"""Settings come from the environment, with safe development defaults only."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import ConfigError, config_from_env
from mailer import create_app
from mailer.settings import SettingsError
from tests.conftest import config_for_tests
from tests.processes import ROOT, flask_env, run_flask


def test_every_setting_is_read_from_the_environment():
    config = config_from_env(
        {
            "MAILER_DATABASE_URL": "postgresql://u@h/db",
            "MAILER_SECRET_KEYS": "old, new",
            "MAILER_BASE_URL": "https://mail.shop.example/",
            "MAILER_SMTP_URL": "smtps://u:p@relay:465",
            "MAILER_FROM": "Shop <news@shop.example>",
            "MAILER_POSTAL_ADDRESS": "1 High St",
            "MAILER_RETRY_BACKOFF": "30",
            "MAILER_RATELIMIT_ENABLED": "0",
            "MAILER_MAX_RATE": "50",
        }
    )
    assert config.MAILER_SECRET_KEYS == ["old", "new"]
    assert config.MAILER_BASE_URL == "https://mail.shop.example"
    assert config.MAILER_RETRY_BACKOFF == 30.0
    assert config.MAILER_RATELIMIT_ENABLED is False
    assert config.MAILER_MAX_RATE == 50.0


def test_a_wrong_number_names_its_variable():
    with pytest.raises(ValueError, match="MAILER_RETRY_BACKOFF"):
        config_from_env({"MAILER_RETRY_BACKOFF": "soon"})


def test_production_refuses_to_start_without_secret_keys(tmp_path):
    with pytest.raises(ConfigError, match="MAILER_SECRET_KEYS"):
        config_from_env({**SAFE_PRODUCTION, "MAILER_SECRET_KEYS": "",
                         "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})


# ------------------------------------------------------------------ production refusals

# Every setting production needs, each safe: the start of every refusal case below.
SAFE_PRODUCTION = {
    "MAILER_ENV": "production",
    "MAILER_SECRET_KEYS": "o" * 32 + "," + "n" * 40,
    "MAILER_ADDRESS_HASH_KEY": "h" * 32,
    "MAILER_BASE_URL": "https://news.shop.example",
    "MAILER_SMTP_URL": "smtp://mailer:secret@relay.shop.example:587?starttls=1",
    "MAILER_FROM": "Shop <news@shop.example>",
    "MAILER_POSTAL_ADDRESS": "Shop, 1 High Street, Town",
}

# (what changes in SAFE_PRODUCTION, the setting the one line must name): the contract's list.
PRODUCTION_REFUSALS = [
    ({"MAILER_SECRET_KEYS": ""}, "MAILER_SECRET_KEYS"),
    ({"MAILER_SECRET_KEYS": "k"}, "MAILER_SECRET_KEYS"),
    ({"MAILER_SECRET_KEYS": "o" * 32 + "," + "n" * 31}, "MAILER_SECRET_KEYS"),
    ({"MAILER_ADDRESS_HASH_KEY": ""}, "MAILER_ADDRESS_HASH_KEY"),
    ({"MAILER_ADDRESS_HASH_KEY": "h" * 31}, "MAILER_ADDRESS_HASH_KEY"),
    ({"MAILER_BASE_URL": ""}, "MAILER_BASE_URL"),
    ({"MAILER_BASE_URL": "http://news.shop.example"}, "MAILER_BASE_URL"),
    ({"MAILER_SMTP_URL": ""}, "MAILER_SMTP_URL"),
    ({"MAILER_SMTP_URL": "smtp://mailer:secret@relay.shop.example:587"}, "MAILER_SMTP_URL"),
    ({"MAILER_SMTP_URL": "smtps://mailer:secret@relay.shop.example?verify=0"},
     "MAILER_SMTP_URL"),
    ({"MAILER_SMTP_URL": "smtp://relay.shop.example:25?verify=0"}, "MAILER_SMTP_URL"),
    ({"MAILER_FROM": ""}, "MAILER_FROM"),
    ({"MAILER_POSTAL_ADDRESS": ""}, "MAILER_POSTAL_ADDRESS"),
]


@pytest.mark.parametrize(("change", "named"), PRODUCTION_REFUSALS)
def test_production_refuses_an_unsafe_setting_in_one_line_naming_it(change, named):
    with pytest.raises(ConfigError) as caught:
        config_from_env({**SAFE_PRODUCTION, **change})
    message = str(caught.value)
    assert named in message and "\n" not in message
    # Development takes the same value (with its own placeholders where one is unset).
    config_from_env({**SAFE_PRODUCTION, **change, "MAILER_ENV": "development"})


@pytest.mark.parametrize("smtp", [
    "smtps://mailer:secret@relay.shop.example",  # implicit TLS
    "smtp://mailer:secret@relay.shop.example:587?starttls=1",
    "smtp://relay.internal:25",  # no credentials to protect: a relay that trusts the host
])
def test_production_starts_with_safe_settings_and_warns_about_doubtful_ones(
        smtp, tmp_path, caplog):
    config = config_from_env({**SAFE_PRODUCTION, "MAILER_SMTP_URL": smtp,
                              "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    with caplog.at_level("WARNING"):
        app = create_app(config)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # SQLite and memory:// limits are doubtful, not refused.
    assert any("SQLite" in w for w in warnings), warnings
    assert any("MAILER_RATELIMIT_STORAGE_URL" in w for w in warnings), warnings
    assert app.config["MAILER_LOG_FORMAT"] == "json"


def test_production_with_redis_limits_does_not_warn_about_them(tmp_path, caplog):
    config = config_from_env({**SAFE_PRODUCTION,
                              "MAILER_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
                              "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    with caplog.at_level("WARNING"):
        create_app(config)
    assert not any("MAILER_RATELIMIT_STORAGE_URL" in r.getMessage() for r in caplog.records)


def _refused_in_one_line(result: subprocess.CompletedProcess[str], named: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailer: configuration error: ") and named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("change", "named"), PRODUCTION_REFUSALS)
def test_every_cli_command_refuses_unsafe_production_settings(app, change, named):
    result = run_flask(app, "mailer", "create-api-key", "shop", **{**SAFE_PRODUCTION, **change})
    _refused_in_one_line(result, named)
    assert result.stdout == ""


@pytest.mark.parametrize("command", [("mailer", "worker"), ("mailer", "dev"),
                                     ("mailer", "import", "x.csv", "--topic", "t",
                                      "--source", "s"),
                                     ("db", "upgrade")])
def test_the_worker_dev_import_and_migrations_refuse_too(app, command):
    result = run_flask(app, *command, **{**SAFE_PRODUCTION, "MAILER_SMTP_URL": ""})
    _refused_in_one_line(result, "MAILER_SMTP_URL")


def test_the_web_entry_point_refuses_too(app):
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT,
                            env=flask_env(app, **{**SAFE_PRODUCTION,
                                                  "MAILER_BASE_URL": "http://x.example"}),
                            capture_output=True, text=True, timeout=120)
    _refused_in_one_line(result, "MAILER_BASE_URL")


def test_gunicorn_stops_instead_of_serving_an_unsafe_production_setting(app):
    """Under gunicorn the worker exits 4, gunicorn's "App failed to load", and the master
    stops (2 would have it restart workers that can never start)."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-w", "1", "-b", "127.0.0.1:0", "wsgi:app"], cwd=ROOT,
        env=flask_env(app, **{**SAFE_PRODUCTION, "MAILER_SMTP_URL": "smtp://relay:25?verify=0"}),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("mailer:")]
    assert len(ours) == 1 and "MAILER_SMTP_URL" in ours[0] and "?verify=0" in ours[0]
    assert "Traceback" not in result.stderr


def test_mailer_dev_refuses_production_and_a_non_loopback_host(app):
    safe = {**SAFE_PRODUCTION,
            "MAILER_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"]}
    production = run_flask(app, "mailer", "dev", **safe)
    # Production's start-up warnings (SQLite, memory:// limits) come first, as JSON lines.
    assert production.returncode == 2, production.stderr
    last = production.stderr.strip().splitlines()[-1]
    assert last.startswith("mailer: configuration error: MAILER_ENV is production")
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        exposed = run_flask(app, "mailer", "dev", "--host", host)
        assert exposed.returncode == 2, exposed.stderr
        assert "/dev/mail" in exposed.stderr and "Traceback" not in exposed.stderr


def test_development_generates_a_key_once_into_the_instance_folder(tmp_path, monkeypatch):
    # Point both apps at one instance folder, as two restarts of one checkout would be.
    monkeypatch.setattr("flask.Flask.auto_find_instance_path", lambda self: str(tmp_path))
    first = create_app(config_from_env({"MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}))
    second = create_app(config_from_env({"MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}))
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert (tmp_path / "secret_keys").stat().st_mode & 0o077 == 0


def test_libpq_urls_get_the_psycopg_driver(tmp_path):
    app = create_app(config_from_env({"MAILER_DATABASE_URL": "postgresql://u@127.0.0.1/x",
                                      "MAILER_SECRET_KEYS": "k"}))
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")


@pytest.mark.parametrize("colour", ["red; } body { display: none", "#12", "blue"])
def test_brand_colour_must_be_a_plain_hex_colour(colour):
    with pytest.raises(ValueError, match="MAILER_BRAND_COLOR"):
        config_from_env({"MAILER_BRAND_COLOR": colour})


# ------------------------------------------------------------------ validation at start

# Every setting of the README's table with values that must be refused: (variable, value,
# words the one-line message must hold).
BAD_VALUES = [
    ("MAILER_LOG_FORMAT", "xml", "MAILER_LOG_FORMAT"),
    ("MAILER_TRUSTED_PROXIES", "-1", "MAILER_TRUSTED_PROXIES"),
    ("MAILER_TRUSTED_PROXIES", "two", "MAILER_TRUSTED_PROXIES"),
    ("MAILER_ADDRESS_HASH_KEY", "hex:abc", "MAILER_ADDRESS_HASH_KEY"),
    ("MAILER_ADDRESS_HASH_KEY", "hex:" + "zz" * 32, "MAILER_ADDRESS_HASH_KEY"),
    ("MAILER_METRICS_TOKEN", "a\nb", "MAILER_METRICS_TOKEN"),
    ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics", "PROMETHEUS_MULTIPROC_DIR"),
    ("MAILER_ENV", "prod", "MAILER_ENV"),
    ("MAILER_BASE_URL", "notaurl", "MAILER_BASE_URL"),
    ("MAILER_BASE_URL", "ftp://shop.example", "MAILER_BASE_URL"),
    ("MAILER_BASE_URL", "https://", "MAILER_BASE_URL"),
    ("MAILER_BASE_URL", "https://shop.example/?x=1", "MAILER_BASE_URL"),
    ("MAILER_BASE_URL", "https://shop.example:port", "MAILER_BASE_URL"),
    ("MAILER_SHOP_URL", "notaurl", "MAILER_SHOP_URL"),
    ("MAILER_SHOP_URL", "https://user@shop.example", "MAILER_SHOP_URL"),
    ("MAILER_SMTP_URL", "http://x:25", "MAILER_SMTP_URL"),
    ("MAILER_SMTP_URL", "smtp://host:notaport", "MAILER_SMTP_URL"),
    ("MAILER_SMTP_URL", "relay.example:25", "MAILER_SMTP_URL"),
    ("MAILER_SMTP_URL", "smtp://relay.example?tls=1", "MAILER_SMTP_URL"),
    ("MAILER_FROM", "not-an-address", "MAILER_FROM"),
    ("MAILER_FROM", "Shop <news@>", "MAILER_FROM"),
    ("MAILER_FROM", "a@shop.example, b@shop.example", "MAILER_FROM"),
    ("MAILER_FROM", "Shop <news@shop.example>\nBcc: x@evil.example", "MAILER_FROM"),
    ("MAILER_POSTAL_ADDRESS", "1 High St\x1b[31m", "MAILER_POSTAL_ADDRESS"),
    ("MAILER_TEMPLATE_DIR", "/nonexistent", "MAILER_TEMPLATE_DIR"),
    ("MAILER_RETRY_BACKOFF", "abc", "MAILER_RETRY_BACKOFF"),
    ("MAILER_RETRY_BACKOFF", "-5", "MAILER_RETRY_BACKOFF"),
    ("MAILER_RETRY_BACKOFF", "0", "MAILER_RETRY_BACKOFF"),
    ("MAILER_RETRY_BACKOFF", "nan", "MAILER_RETRY_BACKOFF"),
    ("MAILER_RETRY_BACKOFF", "inf", "MAILER_RETRY_BACKOFF"),
    ("MAILER_DKIM_KEY_FILE", "/nonexistent", "MAILER_DKIM_SELECTOR"),  # all three or none
    ("MAILER_DKIM_SELECTOR", "mail", "MAILER_DKIM_KEY_FILE"),
    ("MAILER_RATELIMIT_ENABLED", "maybe", "MAILER_RATELIMIT_ENABLED"),
    ("MAILER_MAX_RATE", "-1", "MAILER_MAX_RATE"),
    ("MAILER_MAX_RATE", "fast", "MAILER_MAX_RATE"),
    ("MAILER_SMTP_CONNECTIONS", "0", "MAILER_SMTP_CONNECTIONS"),
    ("MAILER_SMTP_CONNECTIONS", "4.5", "MAILER_SMTP_CONNECTIONS"),
    ("MAILER_MAX_ATTEMPTS", "0", "MAILER_MAX_ATTEMPTS"),
    ("MAILER_WORKER_LEASE", "0", "MAILER_WORKER_LEASE"),
    ("MAILER_WORKER_LEASE", "0.5", "MAILER_WORKER_LEASE"),
    ("MAILER_WORKER_BATCH", "-1", "MAILER_WORKER_BATCH"),
    ("MAILER_CONFIRM_MAX_AGE", "-1", "MAILER_CONFIRM_MAX_AGE"),
    ("MAILER_CONFIRM_MAX_AGE", "0", "MAILER_CONFIRM_MAX_AGE"),
    ("MAILER_CONFIRM_MAX_AGE", "a week", "MAILER_CONFIRM_MAX_AGE"),
    ("MAILER_BRAND_NAME", "Shop\r\nBcc: x@evil.example", "MAILER_BRAND_NAME"),
    ("MAILER_BRAND_COLOR", "blue", "MAILER_BRAND_COLOR"),
    ("MAILER_REFERRAL_DAILY_CAP", "-1", "MAILER_REFERRAL_DAILY_CAP"),
    ("MAILER_PAGE_RATE_LIMIT", "garbage", "MAILER_PAGE_RATE_LIMIT"),
    ("MAILER_RATELIMIT_STORAGE_URL", "bogus://", "MAILER_RATELIMIT_STORAGE_URL"),
    ("MAILER_RATELIMIT_STORAGE_URL", "memory", "MAILER_RATELIMIT_STORAGE_URL"),
    ("MAILER_LOG_LEVEL", "LOUD", "MAILER_LOG_LEVEL"),
]


@pytest.mark.parametrize(("name", "value", "named"), BAD_VALUES)
def test_a_wrong_value_is_refused_in_one_line_naming_the_setting(name, value, named):
    with pytest.raises(ConfigError) as caught:
        config_from_env({name: value})
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


# Values that must keep working, each alone beside the defaults.
GOOD_VALUES = [
    ("MAILER_ENV", "Production"),
    ("MAILER_BASE_URL", "https://mail.shop.example/"),
    ("MAILER_BASE_URL", "http://localhost:8080/mailer"),
    ("MAILER_SHOP_URL", "https://Shop.Example/store"),
    ("MAILER_SMTP_URL", "smtps://u:p%40ss@relay.example:465?timeout=10&verify=0&helo=mx.example"),
    ("MAILER_SMTP_URL", "smtp://relay.example:587?starttls=1"),
    ("MAILER_SMTP_URL", "memory://"),
    ("MAILER_SMTP_URL", "console://"),
    ("MAILER_FROM", "Shop <news@shop.example>"),
    ("MAILER_FROM", '"Shop, Inc." <news@shop.example>'),
    ("MAILER_FROM", "news@shop.example"),
    ("MAILER_FROM", "mailer <mailer@localhost>"),
    ("MAILER_POSTAL_ADDRESS", "Music Store\n1 High Street\n12345 Town"),
    ("MAILER_RETRY_BACKOFF", "0.2"),
    ("MAILER_RATELIMIT_ENABLED", "off"),
    ("MAILER_RATELIMIT_ENABLED", "TRUE"),
    ("MAILER_MAX_RATE", "0"),
    ("MAILER_MAX_RATE", "12.5"),
    ("MAILER_WORKER_LEASE", "2"),
    ("MAILER_REFERRAL_DAILY_CAP", "0"),
    ("MAILER_CONFIRM_MAX_AGE", "2"),
    ("MAILER_PAGE_RATE_LIMIT", "5/minute"),
    ("MAILER_LOG_LEVEL", "debug"),
    ("MAILER_DATABASE_URL", "postgresql://u@h/db"),
    ("MAILER_SECRET_KEYS", "a,b"),
    ("MAILER_ADDRESS_HASH_KEY", "pinned"),
    ("MAILER_ADDRESS_HASH_KEY", "hex:" + "ab" * 32),
    ("MAILER_LOG_FORMAT", "JSON"),
    ("MAILER_TRUSTED_PROXIES", "2"),
    ("MAILER_METRICS_TOKEN", "scrape-me"),
]


@pytest.mark.parametrize(("name", "value"), GOOD_VALUES)
def test_a_valid_value_keeps_working(name, value):
    # Production's own refusals need every other setting safe.
    base = SAFE_PRODUCTION if value.lower() == "production" else {}
    config_from_env({**base, name: value})


def test_a_redis_storage_needs_its_client_library():
    import importlib.util

    env = {"MAILER_RATELIMIT_STORAGE_URL": "redis://cache.example:6379/0"}
    if importlib.util.find_spec("redis") is not None:
        config = config_from_env(env)
        assert config.MAILER_RATELIMIT_STORAGE_URL.startswith("redis://")
    else:  # Flask-Limiter would fail with a traceback at start
        with pytest.raises(ConfigError, match="needs the Python package 'redis'"):
            config_from_env(env)


@pytest.mark.parametrize("env", ["development", "test"])
def test_every_environment_starts_with_its_defaults(env, tmp_path):
    config = config_from_env({"MAILER_ENV": env})
    assert config.MAILER_BASE_URL == "http://127.0.0.1:5000"
    assert config.MAILER_LOG_FORMAT == "text" and config.MAILER_TRUSTED_PROXIES == 0
    assert config.MAILER_PAGE_RATE_LIMIT == "10 per minute; 100 per day"
    # The test configuration the suite itself runs on.
    config_for_tests(f"sqlite:///{tmp_path}/x.db")


def test_an_existing_template_dir_and_a_full_dkim_setting_are_accepted(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    dkim = {"MAILER_DKIM_KEY_FILE": str(pem), "MAILER_DKIM_SELECTOR": "mail",
            "MAILER_DKIM_DOMAIN": "shop.example"}
    config = config_from_env({"MAILER_TEMPLATE_DIR": str(tmp_path), **dkim})
    assert str(tmp_path) == config.MAILER_TEMPLATE_DIR
    assert str(pem) == config.MAILER_DKIM_KEY_FILE

    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    for broken, named in [({"MAILER_DKIM_KEY_FILE": str(not_a_key)}, "MAILER_DKIM_KEY_FILE"),
                          ({"MAILER_DKIM_KEY_FILE": str(tmp_path / "gone.pem")},
                           "MAILER_DKIM_KEY_FILE"),
                          ({"MAILER_DKIM_DOMAIN": "shop example"}, "MAILER_DKIM_DOMAIN")]:
        with pytest.raises(ConfigError, match=named):
            config_from_env({**dkim, **broken})


@pytest.mark.parametrize(
    ("url", "words"),
    [("garbage", "not a database URL"),
     ("foo://x", "unknown database kind"),
     ("postgresql+nosuchdriver://u@h/db", "unknown database kind"),
     ("mysql+nosuchdriver://u@h/db", "unknown database kind")],
)
def test_a_database_url_sqlalchemy_cannot_use_is_refused_at_start(url, words):
    with pytest.raises(SettingsError, match=words) as caught:
        create_app(config_from_env({"MAILER_DATABASE_URL": url, "MAILER_SECRET_KEYS": "k"}))
    assert "MAILER_DATABASE_URL" in str(caught.value)


# The real `flask --app wsgi` in a subprocess: one line on stderr, exit status 2, no traceback.
CLI_CASES = [
    ({"MAILER_BASE_URL": "notaurl"}, "MAILER_BASE_URL"),
    ({"MAILER_FROM": "not-an-address"}, "MAILER_FROM"),
    ({"MAILER_RETRY_BACKOFF": "abc"}, "MAILER_RETRY_BACKOFF"),
    ({"MAILER_SMTP_URL": "http://x:25"}, "MAILER_SMTP_URL"),
    ({"MAILER_DKIM_KEY_FILE": "/nonexistent", "MAILER_DKIM_SELECTOR": "mail",
      "MAILER_DKIM_DOMAIN": "shop.example"}, "MAILER_DKIM_KEY_FILE"),
    ({"MAILER_DATABASE_URL": "garbage"}, "MAILER_DATABASE_URL"),
    ({"MAILER_ENV": "production", "MAILER_SECRET_KEYS": ""}, "MAILER_SECRET_KEYS"),
    ({"MAILER_MAX_RATE": "-1"}, "MAILER_MAX_RATE"),
]


@pytest.mark.parametrize(("env", "named"), CLI_CASES)
def test_the_cli_refuses_to_start_with_one_line_naming_the_setting(app, env, named):
    result = run_flask(app, "mailer", "create-api-key", "shop", **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailer: configuration error: ") and named in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_the_worker_refuses_to_start_too(app):
    result = run_flask(app, "mailer", "worker", MAILER_WORKER_BATCH="-1")
    assert result.returncode == 2
    assert result.stderr.strip() == ("mailer: configuration error: MAILER_WORKER_BATCH must be "
                                     "at least 1, got '-1'")


# ------------------------------------------------------------- the expired-link page

@pytest.mark.parametrize(
    ("seconds", "words"),
    [(604800, "1 week"), (2, "2 seconds"), (1, "1 second"), (3600, "1 hour"),
     (90000, "1 day and 1 hour"), (1209600, "2 weeks"),
     (694861, "1 week, 1 day, 1 hour, 1 minute and 1 second")],
)
def test_the_expired_confirmation_page_says_how_long_links_work(app, client, monkeypatch,
                                                                seconds, words):
    from itsdangerous.timed import TimestampSigner

    from mailer import tokens

    # A token made longer ago than the setting allows.
    made = int(time.time()) - seconds - 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: made)
    token = tokens.sign(tokens.Purpose.CONFIRM, {"c": 1, "t": ["news"]})
    monkeypatch.undo()
    monkeypatch.setitem(app.config, "MAILER_CONFIRM_MAX_AGE", seconds)
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 410
    html = page.get_data(as_text=True)
    assert f"Confirmation links work for {words}." in html
    if seconds != 604800:
        assert "a week" not in html


def test_the_wsgi_module_freezes_the_app_out_of_the_collectors_way(app):
    """gunicorn's `wsgi:app` leaves the app's long-lived objects frozen, so a full garbage
    collection under load scans only what requests leave behind."""
    result = subprocess.run(
        [sys.executable, "-c", "import gc, wsgi; print(gc.get_freeze_count())"],
        cwd=ROOT, env=flask_env(app), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 10_000, result.stdout
