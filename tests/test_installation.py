"""The address-hash key's fingerprint: recorded on first use, a changed key refuses to run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.engine import make_url

from mailer import installation
from mailer.extensions import db
from mailer.installation import (
    ADDRESS_HASH_KEY_FINGERPRINT,
    AddressHashKeyChanged,
    Installation,
    address_hash_key,
    fingerprint,
    key_bytes,
    legacy_address_hash_key,
)
from tests.ensure_postgres import ensure_database
from tests.processes import run_flask
from tests.sql_events import listening

CSV = "email\nann@example.com\n"


@pytest.fixture
def fresh_check(app) -> Iterator[None]:
    """An empty `installation` table and an app that checks again; afterwards the app is
    checked with its own key, as the suite's app starts (no later first request pays)."""
    _forget_everything(app)
    yield
    _forget_everything(app)
    installation.check(app)


def _forget_everything(app) -> None:
    db.session.rollback()
    db.session.execute(delete(Installation))
    db.session.commit()
    installation.forget_check(app)


def stored() -> list[tuple[str, str]]:
    db.session.rollback()
    return [(row.name, row.value) for row in db.session.scalars(select(Installation))]


def record_other_key() -> None:
    """What an install set up under another address-hash key left in its database."""
    db.session.add(Installation(name=ADDRESS_HASH_KEY_FINGERPRINT,
                                value=fingerprint(b"an older key")))
    db.session.commit()


def test_the_first_use_records_a_fingerprint_never_the_key(app, fresh_check):
    assert stored() == []
    installation.check()
    key = address_hash_key()
    assert stored() == [(ADDRESS_HASH_KEY_FINGERPRINT, fingerprint(key))]
    value = stored()[0][1]
    assert key.hex() not in value and value != key.hex()
    # The fingerprint depends on the key.
    assert fingerprint(key) != fingerprint(key + b"x")


def test_a_different_key_refuses_and_keeps_refusing(app, fresh_check):
    record_other_key()
    with pytest.raises(AddressHashKeyChanged) as caught:
        installation.check()
    message = str(caught.value)
    assert "\n" not in message
    assert "MAILER_ADDRESS_HASH_KEY" in message and "legacy-address-hash-key" in message
    # The stored fingerprint is left alone: putting the old key back must work.
    assert stored() == [(ADDRESS_HASH_KEY_FINGERPRINT, fingerprint(b"an older key"))]
    with pytest.raises(AddressHashKeyChanged):
        installation.check()


def test_the_web_app_answers_503_while_the_key_differs(app, client, fresh_check, caplog):
    record_other_key()
    api = client.get("/api/v1/topics")
    assert api.status_code == 503
    assert api.get_json()["error"]["code"] == "service_misconfigured"
    page = client.get("/subscribe")
    assert page.status_code == 503 and "MAILER_ADDRESS_HASH_KEY" not in page.get_data(
        as_text=True)
    assert client.get("/healthz").status_code == 503
    assert any("MAILER_ADDRESS_HASH_KEY" in r.getMessage() for r in caplog.records
               if r.levelname == "ERROR")


def test_the_web_app_checks_once_per_process(app, client, fresh_check):
    statements: list[str] = []

    def remember(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with listening(remember):
        assert client.get("/api/v1/openapi.json").status_code == 200
        first = [s for s in statements if "installation" in s.lower()]
        statements.clear()
        for _ in range(3):
            assert client.get("/api/v1/openapi.json").status_code == 200
    assert first  # the first request looked
    assert statements == []  # the later ones did not touch the database at all
    assert stored() == [(ADDRESS_HASH_KEY_FINGERPRINT, fingerprint(address_hash_key()))]


def test_the_worker_refuses_to_start_with_another_address_hash_key(app, tmp_path, fresh_check):
    installation.check()  # the suite's app records its key
    assert stored() != []
    result = run_flask(app, "mailer", "worker", MAILER_ADDRESS_HASH_KEY="a brand-new key")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "MAILER_ADDRESS_HASH_KEY back to its old value" in lines[0]

    path = tmp_path / "list.csv"
    path.write_text(CSV)
    pinned = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "x",
                       MAILER_ADDRESS_HASH_KEY="a brand-new key")
    assert pinned.returncode == 2 and "MAILER_ADDRESS_HASH_KEY" in pinned.stderr
    assert "imported" not in pinned.stdout


def test_the_signing_keys_can_be_retired_without_touching_the_address_hash(app, tmp_path,
                                                                          fresh_check):
    """The address-hash key is its own setting: dropping the oldest signing key (what a key
    rotation ends with) leaves every suppression in place."""
    installation.check()
    _oldest, *newer = app.config["MAILER_SECRET_KEYS"]
    path = tmp_path / "list.csv"
    path.write_text(CSV)
    result = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "x",
                       MAILER_SECRET_KEYS=",".join(newer))
    assert "configuration error" not in result.stderr, result.stderr


def scratch_url(app, tmp_path) -> str:
    """An empty database of its own beside the suite's, on the same kind of server."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "postgresql":
        return f"sqlite:///{tmp_path}/scratch.db"
    rendered = url.set(database=f"{url.database}_installation").render_as_string(
        hide_password=False)
    ensure_database(rendered)
    from sqlalchemy import create_engine

    engine = create_engine(rendered)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return rendered


def test_a_new_database_is_migrated_then_set_up_by_its_first_command(app, tmp_path):
    url = scratch_url(app, tmp_path)
    upgraded = run_flask(app, "db", "upgrade", MAILER_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr

    path = tmp_path / "list.csv"
    path.write_text(CSV)
    imported = run_flask(app, "mailer", "import", str(path), "--topic", "news",
                         "--source", "x", MAILER_DATABASE_URL=url)
    # Set up (the unknown topic is the import's own complaint, after the check).
    assert "configuration error" not in imported.stderr, imported.stderr
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, value FROM installation")).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        (ADDRESS_HASH_KEY_FINGERPRINT, fingerprint(address_hash_key()))]

    dropped = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "x",
                        MAILER_DATABASE_URL=url, MAILER_ADDRESS_HASH_KEY="another-key")
    assert dropped.returncode == 2 and "configuration error" in dropped.stderr


def test_a_database_without_the_table_is_not_checked_yet(app, tmp_path):
    from mailer import create_app
    from tests.conftest import config_for_tests

    empty = create_app(config_for_tests(f"sqlite:///{tmp_path}/empty.db"))
    with empty.app_context():
        installation.check()  # no table: nothing to compare, nothing recorded
        assert "mailer.installation_checked" not in empty.extensions
        db.engine.dispose()


# ------------------------------------------------ the address-hash key of a development install

def development_app(url: str, instance, secret_keys: str = "dev-signing-key"):
    """An app as a development checkout runs it: no MAILER_ADDRESS_HASH_KEY, its own instance/."""
    import config as config_module
    from mailer import create_app

    application = create_app(config_module.config_from_env(
        {"MAILER_DATABASE_URL": url, "MAILER_SECRET_KEYS": secret_keys}))
    application.instance_path = str(instance)
    return application


def migrated_scratch(app, tmp_path) -> str:
    import flask_migrate

    url = scratch_url(app, tmp_path)
    scratch = development_app(url, tmp_path / "setup-instance", "setup-only")
    scratch.config["MAILER_ADDRESS_HASH_KEY"] = "setup-only"
    with scratch.app_context():
        flask_migrate.upgrade()
        db.engine.dispose()
    return url


def record_fingerprint(url: str, key: bytes) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(Installation.__table__.insert().values(
            name=ADDRESS_HASH_KEY_FINGERPRINT, value=fingerprint(key)))
    engine.dispose()


def test_a_fresh_development_install_generates_its_own_key_once(app, tmp_path):
    url = migrated_scratch(app, tmp_path)
    instance = tmp_path / "instance"
    first = development_app(url, instance)
    with first.app_context():
        installation.check()
        key = address_hash_key()
        db.engine.dispose()
    written = instance / installation.ADDRESS_HASH_KEY_FILE
    assert written.stat().st_mode & 0o077 == 0
    # Random, not derived from the signing key.
    assert key != key_bytes(legacy_address_hash_key("dev-signing-key")) and len(key) >= 32
    again = development_app(url, instance, secret_keys="a-rotated-signing-key")
    with again.app_context():
        installation.check()  # same file, same key: passes though the signing key changed
        assert address_hash_key() == key
        db.engine.dispose()


def test_an_upgraded_install_keeps_its_derived_key_through_the_one_time_step(app, tmp_path):
    """A database set up before MAILER_ADDRESS_HASH_KEY, whose key was derived from the first
    signing key: development writes that key into instance/, and the command prints it for
    production's setting; with it, production passes the fingerprint check."""
    url = migrated_scratch(app, tmp_path)
    legacy = legacy_address_hash_key("dev-signing-key")
    record_fingerprint(url, key_bytes(legacy))

    upgraded = development_app(url, tmp_path / "instance")
    with upgraded.app_context():
        installation.check()
        assert address_hash_key() == key_bytes(legacy)
        db.engine.dispose()
    assert (tmp_path / "instance" / "address_hash_key").read_text().strip() == legacy

    printed = run_flask(app, "mailer", "legacy-address-hash-key", MAILER_DATABASE_URL=url,
                        MAILER_SECRET_KEYS="dev-signing-key", MAILER_ADDRESS_HASH_KEY="")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip().splitlines()[-1] == legacy

    from tests.test_settings import SAFE_PRODUCTION

    path = tmp_path / "list.csv"
    path.write_text(CSV)
    production = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source",
                           "x", **{**SAFE_PRODUCTION, "MAILER_DATABASE_URL": url,
                                   "MAILER_ADDRESS_HASH_KEY": legacy,
                                   "MAILER_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0"})
    assert "configuration error" not in production.stderr, production.stderr
    assert "topic" in production.stderr.lower()  # past the check: the import's own complaint


def test_a_database_of_another_key_is_refused_and_not_carried_over(app, tmp_path):
    url = migrated_scratch(app, tmp_path)
    record_fingerprint(url, b"some other install's key")
    stranger = development_app(url, tmp_path / "instance")
    with stranger.app_context():
        with pytest.raises(AddressHashKeyChanged):
            installation.check()
        assert address_hash_key() != key_bytes(legacy_address_hash_key("dev-signing-key"))
        db.engine.dispose()
    printed = run_flask(app, "mailer", "legacy-address-hash-key", MAILER_DATABASE_URL=url,
                        MAILER_SECRET_KEYS="dev-signing-key", MAILER_ADDRESS_HASH_KEY="")
    assert printed.returncode == 1 and printed.stdout == ""
