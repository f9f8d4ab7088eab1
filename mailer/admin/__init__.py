"""The marketers' console (/admin/): users, topics, contacts, templates, campaigns, reports,
suppressions; a module per section, each adding its views to `blueprint.blp`."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Import every section (each adds its views to the blueprint) and register it."""
    from mailer.admin import (  # noqa: F401  (imported for the views they add)
        api_keys,
        campaigns,
        compose,
        contacts,
        notices,
        reports,
        routes,
        statistics,
        templates,
        topics,
        users,
        webhooks,
    )
    from mailer.admin.blueprint import blp, unauthorized
    from mailer.admin.services import load_user
    from mailer.extensions import login_manager

    login_manager.user_loader(load_user)
    login_manager.unauthorized_handler(unauthorized)
    app.register_blueprint(blp)
