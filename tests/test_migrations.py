"""The Alembic migrations build the models' schema from empty, and tear it down again."""

from __future__ import annotations

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from mailer import create_app
from mailer.extensions import db
from tests.conftest import config_for_tests
from tests.ensure_postgres import ensure_database


def scratch_url(app, tmp_path) -> str:
    """A database of its own beside the suite's, on the same kind of server."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        scratch = url.set(database=f"{url.database}_migrations")
        rendered = scratch.render_as_string(hide_password=False)
        ensure_database(rendered)
        return rendered
    return f"sqlite:///{tmp_path}/migrations.db"


def test_upgrade_from_empty_matches_the_models_and_downgrade_removes_everything(app, tmp_path):
    scratch = create_app(config_for_tests(scratch_url(app, tmp_path)))
    with scratch.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
        flask_migrate.upgrade()
        with db.engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), db.metadata
            )
        assert diff == []
        if db.engine.dialect.name == "postgresql":
            # Alembic's comparison does not look at collations: the models' byte-ordered keys
            # (messages.models._bytes_ordered) must be what migration 0009 made.
            with db.engine.connect() as connection:
                collations = dict(connection.execute(text(
                    "SELECT column_name, collation_name FROM information_schema.columns "
                    "WHERE table_name = 'messages' AND collation_name IS NOT NULL")).all())
            assert collations == {"address_hash": "C", "public_id": "C"}

        flask_migrate.downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}

        flask_migrate.upgrade()
        assert {"contacts", "topics", "subscriptions", "consent_events", "suppressions",
                "api_keys"} <= set(inspect(db.engine).get_table_names())
        db.engine.dispose()
