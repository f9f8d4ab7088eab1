"""mailer: a self-hostable newsletter and email-preference service."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask


def create_app(config: Any = None) -> Flask:
    """Build the WSGI application from a configuration object (default: the environment)."""
    from config import config_from_env
    from mailer import cli, errors, health, settings
    from mailer.api import register_api
    from mailer.extensions import db, migrate

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config if config is not None else config_from_env())
    settings.resolve(app)
    logging.basicConfig(level=app.config.get("MAILER_LOG_LEVEL", "INFO"))

    import mailer.models  # noqa: F401  (registers every table before the mappers configure)

    db.init_app(app)
    migrate.init_app(app, db, directory=_migrations_dir(), render_as_batch=True)
    with app.app_context():
        from mailer.database import configure_engine

        configure_engine(db.engine)
    from mailer.messages import render

    render.init_app(app)
    register_api(app)
    errors.register_error_handlers(app)
    cli.register(app)
    health.register(app)
    from mailer.pages import routes as pages

    pages.register(app)
    return app


def _migrations_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "migrations")
