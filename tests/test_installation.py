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
    fingerprint,
)
from mailer.settings import address_hash_key
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
    assert "MAILER_SECRET_KEYS" in message and "MAILER_ADDRESS_HASH_KEY" in message
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
    assert page.status_code == 503 and "MAILER_SECRET_KEYS" not in page.get_data(as_text=True)
    assert client.get("/healthz").status_code == 503
    assert any("MAILER_SECRET_KEYS" in r.getMessage() for r in caplog.records
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


def test_the_worker_refuses_to_start_after_the_oldest_key_was_dropped(app, tmp_path,
                                                                      fresh_check):
    installation.check()  # the suite's app records its key
    _oldest, *newer = app.config["MAILER_SECRET_KEYS"]
    assert stored() != []
    result = run_flask(app, "mailer", "worker", MAILER_SECRET_KEYS=",".join(newer))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "put the old first key back" in lines[0].lower()

    path = tmp_path / "list.csv"
    path.write_text(CSV)
    pinned = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "x",
                       MAILER_ADDRESS_HASH_KEY="a brand-new key")
    assert pinned.returncode == 2 and "MAILER_ADDRESS_HASH_KEY" in pinned.stderr
    assert "imported" not in pinned.stdout


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
                        MAILER_DATABASE_URL=url, MAILER_SECRET_KEYS="only-a-new-key")
    assert dropped.returncode == 2 and "configuration error" in dropped.stderr


def test_a_database_without_the_table_is_not_checked_yet(app, tmp_path):
    from mailer import create_app
    from tests.conftest import config_for_tests

    empty = create_app(config_for_tests(f"sqlite:///{tmp_path}/empty.db"))
    with empty.app_context():
        installation.check()  # no table: nothing to compare, nothing recorded
        assert "mailer.installation_checked" not in empty.extensions
        db.engine.dispose()
