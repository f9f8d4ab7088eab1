"""The console's blueprint and what every page of it shares: the login check, no caching,
the answer to a stranger, the action form in every template, a fresh session on login.

Each section of the console (routes.py: login and overview; topics.py, contacts.py, ...) adds
its views to `blp`; `mailer.admin.register()` imports them all.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms
from mailer.extensions import login_manager
from mailer.messages.mime import OutgoingMail
from mailer.messages.render import Rendered

blp = Blueprint("admin", __name__, url_prefix="/admin")

PUBLIC_ENDPOINTS = frozenset({"admin.login"})


# -- access ------------------------------------------------------------------------------------

@blp.before_request
def require_login() -> BaseResponse | None:
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    return login_manager.unauthorized()


@blp.after_request
def no_store(response: Response) -> Response:
    # Console pages show the shop's figures: no shared or browser cache keeps them.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def unauthorized() -> BaseResponse | tuple[Response, int]:
    """A stranger: the progress JSON says 401, a page sends them to the login."""
    if request.endpoint == "admin.progress":
        return jsonify({"error": {"code": "unauthorized", "message": "Log in first.",
                                  "fields": {}}}), 401
    return redirect(url_for("admin.login", next=request.path))


def fresh_session() -> None:
    """Start the session anew, CSRF token included, when who is logged in changes."""
    session.clear()
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


@blp.context_processor
def console_context() -> dict[str, Any]:
    return {"admin_action_form": forms.ActionForm}


def mail_preview(mail: OutgoingMail | Rendered) -> dict[str, Any]:
    """A mail's subject and parts, as the preview templates show them."""
    return {"subject": mail.subject, "html": mail.html, "text": mail.text}
