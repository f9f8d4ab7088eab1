"""The JSON API under /api/v1: one module per resource, all errors in one envelope."""

from __future__ import annotations

from flask import Flask

from mailer.api.guards import check_request_data
from mailer.extensions import api, csrf


def register_api(app: Flask) -> None:
    """Bind flask-smorest, register every resource, and install the request guards."""
    from mailer.api import campaigns, contacts, inbound, messages, referrals, topics

    app.config.setdefault("API_SPEC_OPTIONS", {})
    app.config["API_SPEC_OPTIONS"].update(
        {
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key"}
                }
            },
            "info": {
                "description": (
                    "Contacts, topics and consent, sending, referrals and campaigns. "
                    "Errors: {\"error\": {\"code\", \"message\", \"fields\"}}."
                )
            },
        }
    )
    api.init_app(app)
    for module in (contacts, topics, messages, referrals, campaigns, inbound):
        # Bearer keys, not cookies, authenticate the API: no CSRF token applies.
        csrf.exempt(module.blp)
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    app.before_request(check_request_data)
