"""Test fixtures: a real database (SQLite file, or PostgreSQL via MAILER_TEST_DATABASE_URL).

The schema is migrated from empty once per session with the project's own
Alembic migrations; after each test every table is emptied, so tests see a
fresh schema whatever they committed (services commit, and so do the CLI and
subprocesses, which a rolled-back transaction could not isolate).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import flask_migrate
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from config import TestConfig
from mailer import create_app, installation
from mailer.apikeys import services as apikeys
from mailer.extensions import db

IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET_KEYS = ["test-secret-old", "test-secret-new"]


def database_url(tmp_dir: str) -> str:
    """The database the suite runs on: MAILER_TEST_DATABASE_URL, else a fresh SQLite file."""
    return os.environ.get("MAILER_TEST_DATABASE_URL") or f"sqlite:///{tmp_dir}/mailer.db"


def config_for_tests(url: str) -> TestConfig:
    """A configuration for tests that never reads the developer's own MAILER_* settings."""
    config = TestConfig.from_env({})
    config.MAILER_DATABASE_URL = url
    config.MAILER_SECRET_KEYS = list(TEST_SECRET_KEYS)
    config.MAILER_RATELIMIT_ENABLED = False
    config.MAILER_POSTAL_ADDRESS = "Music Store, 1 High Street, 12345 Town"
    config.MAILER_FROM = "Music Store <news@shop.example>"
    return config


def reset_schema() -> None:
    """Drop everything in the test database, then run every migration from empty."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    else:
        db.drop_all()
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    flask_migrate.upgrade()


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp_dir = tmp_path_factory.mktemp("db")
    application = create_app(config_for_tests(database_url(str(tmp_dir))))
    application.instance_path = str(tmp_path_factory.mktemp("instance"))
    with application.app_context():
        reset_schema()
        # The address-hash key check, once for the session: no test's first request pays it.
        installation.check()
    yield application
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()


def _empty_all_tables() -> None:
    db.session.remove()
    tables = [t for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())


@pytest.fixture(autouse=True)
def app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        _empty_all_tables()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_key() -> str:
    """A key holding every scope."""
    _row, key = apikeys.issue("tests")
    db.session.commit()
    return key


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    """Headers authenticating with a key that holds every scope."""
    return {"Authorization": f"Bearer {api_key}"}


def key_with(*scopes: str) -> dict[str, str]:
    """Headers for a fresh key holding only `scopes`."""
    _row, key = apikeys.issue("scoped", list(scopes))
    db.session.commit()
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL URL for tests that need PostgreSQL itself.

    Outside CI such a test skips with the reason; inside CI (CI=true) it fails.
    """
    url = os.environ.get("MAILER_TEST_DATABASE_URL", "")
    if url.startswith("postgresql"):
        return url
    reason = (
        "needs PostgreSQL: set MAILER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1"
        ":5432/mailer_test (make test-postgres does)"
    )
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def make_topic():
    """Create a topic through the domain and commit it."""
    from mailer.topics.services import create_topic

    def make(slug: str = "news", *, double_opt_in: bool = True, public: bool = True):
        topic = create_topic(slug, slug.title(), "", double_opt_in, public)
        db.session.commit()
        return topic

    return make
