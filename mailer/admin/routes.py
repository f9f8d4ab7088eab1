"""The marketers' console: /admin/ pages. Views parse a form, call a service, render.

Every page but the login needs a logged-in user (checked once, for the whole blueprint).
No page logs or keeps an address it is shown or given: log lines carry ids only.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import (
    Response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from mailer import addresses
from mailer.admin import forms, services
from mailer.admin.blueprint import blp, fresh_session
from mailer.campaigns import services as campaigns
from mailer.extensions import db, limiter
from mailer.suppressions.services import suppressions_of

log = logging.getLogger(__name__)

LOGIN_RATE_LIMIT = "5 per minute"
# Failed logins for one account, from any number of clients: guessing one admin's password
# from many addresses is slowed down, and only that account waits.
ACCOUNT_LOGIN_RATE_LIMIT = "5 per 15 minutes"


def _safe_next(target: str | None) -> str:
    """Only a path inside the console may be the page after login (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if (not parts.scheme and not parts.netloc and target.startswith("/admin/")
                and "\\" not in target):
            return target
    return url_for("admin.dashboard")


def _login_account() -> str:
    """The limiter's key of the account a login names: its keyed hash (no address is kept in
    the limiter's storage), or of the text as typed when it is no address."""
    typed = (request.form.get("email") or "")[:addresses.MAX_ADDRESS_LENGTH + 1]
    try:
        normalized = addresses.normalize(typed)
    except addresses.InvalidAddress:
        normalized = typed.strip().lower()
    return "login-account:" + addresses.keyed_hash(normalized)


def _login_failed(response: Response) -> bool:
    return response.status_code == 422


@blp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])
@limiter.limit(ACCOUNT_LOGIN_RATE_LIMIT, key_func=_login_account, methods=["POST"],
               deduct_when=_login_failed)
def login() -> BaseResponse | tuple[str, int] | str:
    """Log in; an unknown address and a wrong password get the same answer."""
    form = forms.LoginForm()
    failed = False
    if form.validate_on_submit():
        user = services.authenticate(form.email.data, form.password.data)
        if user is not None:
            db.session.commit()
            target = _safe_next(request.args.get("next"))
            fresh_session()
            login_user(user)
            log.info("console login user_id=%s", user.id)
            return redirect(target)
        failed = True
        log.info("console login refused")
    status = 422 if request.method == "POST" else 200
    return render_template("admin/login.html", form=form, failed=failed), status


@blp.post("/logout")
def logout() -> BaseResponse:
    """Log out: every session of the user ends, server-side (a copied cookie too)."""
    if forms.ActionForm().validate_on_submit():
        services.end_sessions(current_user._get_current_object())
        db.session.commit()
        log.info("console logout user_id=%s", current_user.id)
        logout_user()
        fresh_session()
    return redirect(url_for("admin.login"))


# -- overview ----------------------------------------------------------------------------------

@blp.get("/")
def dashboard() -> str:
    """Topics with their subscriber counts, and the latest campaigns with theirs."""
    recent = campaigns.list_campaigns(limit=10)
    return render_template("admin/dashboard.html", topics=services.topic_counts(),
                           campaigns=recent, counts=services.campaign_counts(recent))


# -- campaigns ---------------------------------------------------------------------------------

@blp.get("/campaigns")
def campaign_list() -> str:
    listed = campaigns.list_campaigns()
    return render_template("admin/campaigns.html", campaigns=listed,
                           counts=services.campaign_counts(listed))


# -- suppressions ------------------------------------------------------------------------------

@blp.route("/suppressions", methods=["GET", "POST"])
def suppressions() -> tuple[str, int]:
    """Look up the marks on a typed address; the address is hashed, never kept or logged."""
    form = forms.SuppressionLookupForm()
    marks, problem, looked_up = None, None, False
    if form.validate_on_submit():
        try:
            marks = services.describe_marks(suppressions_of(addresses.hash_of(form.email.data)))
            looked_up = True
        except addresses.InvalidAddress as exc:
            problem = str(exc)
    status = 422 if request.method == "POST" and not looked_up else 200
    return render_template("admin/suppressions.html", form=form, marks=marks,
                           problem=problem), status
