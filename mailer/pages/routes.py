"""Public pages (server-rendered HTML)."""

from __future__ import annotations

from flask import Blueprint, Flask, render_template, request

from mailer.consent import confirmation
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.consent.unsubscribe import Scope, read_token, unsubscribe
from mailer.extensions import csrf, db
from mailer.tokens import TokenExpired, TokenInvalid

blp = Blueprint("pages", __name__)


def _invalid_link() -> tuple[str, int]:
    return render_template("pages/invalid_link.html"), 400


@blp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> tuple[str, int] | str:
    """One button; a GET never changes anything (link scanners fetch it)."""
    try:
        target = read_token(token)
    except TokenInvalid:
        return _invalid_link()
    return render_template("pages/unsubscribe.html", token=token, target=target)


@blp.post("/unsubscribe/<token>")
@csrf.exempt  # RFC 8058: mail providers POST with no cookie and no CSRF token
def unsubscribe_post(token: str) -> tuple[str, int] | str:
    """RFC 8058 one-click: no cookie, no CSRF token, no redirect; 200 and idempotent.

    Mail providers POST `List-Unsubscribe=One-Click` (form-encoded or multipart);
    the page's own button sends the same, plus `scope=all` for "all mail".
    """
    try:
        target = read_token(token)
    except TokenInvalid:
        return _invalid_link()
    scope = Scope.ALL if request.form.get("scope") == "all" else Scope.TOPIC
    from_page = request.form.get("from_page") == "1"
    unsubscribe(target, scope, ConsentSource.UNSUBSCRIBE_PAGE if from_page
                else ConsentSource.ONE_CLICK)
    db.session.commit()
    return render_template("pages/unsubscribed.html", target=target, scope=scope.value)


@blp.get("/confirm/<token>")
def confirm_page(token: str) -> tuple[str, int] | str:
    """Double opt-in: the address confirms; a second click is harmless."""
    try:
        confirmed = confirmation.confirm(token)
    except TokenExpired:
        return render_template("pages/confirm_expired.html"), 410
    except (TokenInvalid, LookupError):
        return _invalid_link()
    db.session.commit()
    subscribed = [s.topic for s in confirmed.contact.subscriptions
                  if s.state == SubscriptionState.SUBSCRIBED]
    return render_template("pages/confirmed.html", topics=subscribed)


def register(app: Flask) -> None:
    app.register_blueprint(blp)
