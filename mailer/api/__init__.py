"""The JSON API under /api/v1: one module per resource, all errors in one envelope."""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from mailer.api.guards import check_request_data
from mailer.errors import API_PREFIX
from mailer.extensions import api, csrf


class NoSessionForTheApi(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions for the pages and the console, none for the API.

    Bearer keys authenticate the API and nothing of it reads or writes the cookie session, yet
    opening one builds a signing serializer and saving one inspects the response, on every
    request. An API request gets Flask's null session instead: reading it finds nothing,
    writing to it raises, and no cookie is read or set.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return None  # Flask then uses make_null_session(), which save_session skips
        return super().open_session(app, request)


def register_api(app: Flask) -> None:
    """Bind flask-smorest, register every resource, and install the request guards."""
    from mailer.api import (
        campaigns,
        contacts,
        inbound,
        messages,
        notices,
        referrals,
        reports,
        templates,
        topics,
        webhooks,
    )

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
                    "Contacts, topics and consent, sending, referrals, campaigns and webhooks. "
                    "Errors: {\"error\": {\"code\", \"message\", \"fields\"}}."
                )
            },
        }
    )
    api.init_app(app)
    app.session_interface = NoSessionForTheApi()
    for module in (contacts, topics, messages, referrals, campaigns, inbound, reports, templates,
                   notices, webhooks):
        # Bearer keys, not cookies, authenticate the API: no CSRF token applies.
        csrf.exempt(module.blp)
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    app.before_request(check_request_data)
