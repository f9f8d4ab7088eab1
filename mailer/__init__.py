"""mailer: a self-hostable newsletter and email-preference service."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask


def create_app(config: Any = None) -> Flask:
    """Build the WSGI application from a configuration object (default: the environment)."""
    from config import config_from_env
    from mailer import cli, errors, health, logs, metrics, settings
    from mailer.api import register_api
    from mailer.extensions import csrf, db, limiter, login_manager, migrate

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config if config is not None else config_from_env())
    settings.resolve(app)
    logs.init_app(app)  # first: every later hook's lines carry the request id
    logs.warn_doubtful_settings(app)
    _trust_proxies(app)

    import mailer.models  # noqa: F401  (registers every table before the mappers configure)

    db.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    # Flask-Limiter logs the client address of each breach; addresses stay out of logs.
    logging.getLogger("flask-limiter").setLevel(logging.ERROR)
    # flufl.bounce logs a line per detector it tries on every bounce.
    logging.getLogger("flufl.bounce").setLevel(logging.WARNING)
    migrate.init_app(app, db, directory=_migrations_dir(), render_as_batch=True)
    with app.app_context():
        from mailer.database import configure_engine

        configure_engine(db.engine)
    from mailer.messages import render, templates

    render.init_app(app)
    templates.init_app(app)
    register_api(app)
    errors.register_error_handlers(app)
    cli.register(app)
    health.register(app)
    metrics.register(app)
    from mailer import installation

    installation.register(app)
    from mailer.pages import routes as pages

    pages.register(app)
    from mailer import admin

    admin.register(app)
    from mailer.devtools import mailbox

    mailbox.register(app)
    _init_dkim(app)
    return app


def _trust_proxies(app: Flask) -> None:
    """Behind MAILER_TRUSTED_PROXIES reverse proxies, take the client's address and scheme from
    the X-Forwarded-For/-Proto they add (werkzeug's ProxyFix), so per-client limits key on the
    real client; with 0 (the default) those headers are ignored, as anyone can send them."""
    hops = int(app.config.get("MAILER_TRUSTED_PROXIES") or 0)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def _migrations_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent / "migrations")


def _init_dkim(app: Flask) -> None:
    """Load the DKIM key once when MAILER_DKIM_KEY_FILE, _SELECTOR and _DOMAIN are all set."""
    names = ("MAILER_DKIM_KEY_FILE", "MAILER_DKIM_SELECTOR", "MAILER_DKIM_DOMAIN")
    values = [app.config.get(name) for name in names]
    if not any(values):
        return
    if not all(values):
        from mailer.settings import SettingsError

        missing = [name for name, value in zip(names, values, strict=True) if not value]
        raise SettingsError(f"DKIM needs all three settings; missing: {', '.join(missing)}")
    from mailer.messages.dkim import DkimSigner

    app.extensions["mailer.dkim"] = DkimSigner.from_files(*values)
