"""Settings come from the environment, with safe development defaults only."""

from __future__ import annotations

import pytest

from config import config_from_env
from mailer import create_app
from mailer.settings import SettingsError


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
    config = config_from_env({"MAILER_ENV": "production",
                              "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    with pytest.raises(SettingsError, match="MAILER_SECRET_KEYS"):
        create_app(config)


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
