"""The marketers' console: /admin/ pages. Views parse a form, call a service, render.

Every page but the login needs a logged-in user (checked once, for the whole blueprint).
No page logs or keeps an address it is shown or given: log lines carry ids only.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse

from mailer import addresses
from mailer.admin import forms, services
from mailer.campaigns import services as campaigns
from mailer.campaigns.models import UNFINISHED, CampaignStatus
from mailer.errors import MailerError
from mailer.extensions import db, limiter, login_manager
from mailer.messages.mime import OutgoingMail
from mailer.messages.render import Rendered
from mailer.suppressions.services import suppressions_of

log = logging.getLogger(__name__)

blp = Blueprint("admin", __name__, url_prefix="/admin")

PUBLIC_ENDPOINTS = frozenset({"admin.login"})
LOGIN_RATE_LIMIT = "5 per minute"
# Failed logins for one account, from any number of clients: guessing one admin's password
# from many addresses is slowed down, and only that account waits.
ACCOUNT_LOGIN_RATE_LIMIT = "5 per 15 minutes"
ACTIONS = ("pause", "resume", "cancel")


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


def _safe_next(target: str | None) -> str:
    """Only a path inside the console may be the page after login (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if (not parts.scheme and not parts.netloc and target.startswith("/admin/")
                and "\\" not in target):
            return target
    return url_for("admin.dashboard")


def _fresh_session() -> None:
    """Start the session anew, CSRF token included, when who is logged in changes."""
    session.clear()
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


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
            _fresh_session()
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
        _fresh_session()
    return redirect(url_for("admin.login"))


@blp.context_processor
def console_context() -> dict[str, Any]:
    return {"admin_action_form": forms.ActionForm}


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


def _mail_preview(mail: OutgoingMail | Rendered) -> dict[str, Any]:
    return {"subject": mail.subject, "html": mail.html, "text": mail.text}


@blp.get("/campaigns/<campaign_id>")
def campaign(campaign_id: str) -> str:
    """A campaign: its counts and progress, a test send, scheduling, pause/resume/cancel."""
    found = campaigns.get(campaign_id)
    counts = campaigns.stats(found)
    counts.update(services.progress_of(counts))
    preview, problem = None, None
    try:
        preview = _mail_preview(campaigns.render_preview(found))
    except MailerError as exc:
        problem = exc.message
    schedule_form = forms.ScheduleForm()
    schedule_form.timezone.choices = _zone_choices()
    return render_template(
        "admin/campaign.html", campaign=found, counts=counts, preview=preview, problem=problem,
        test_form=forms.TestSendForm(to=current_user.email), schedule_form=schedule_form,
        unfinished=found.status in UNFINISHED,
    )


def _zone_choices() -> list[tuple[str, str]]:
    return [("", "This browser's time zone (UTC if unknown)")] + [
        (name, name) for name in services.time_zone_names()]


def _back(public_id: str) -> BaseResponse:
    return redirect(url_for("admin.campaign", campaign_id=public_id))


def _flash_errors(form: FlaskForm) -> None:
    for messages in form.errors.values():
        for message in messages:
            flash(message, "error")


@blp.post("/campaigns/<campaign_id>/test")
def test_send(campaign_id: str) -> BaseResponse:
    form = forms.TestSendForm()
    if not form.validate_on_submit():
        _flash_errors(form)
        return _back(campaign_id)
    try:
        campaigns.send_test(campaigns.get(campaign_id), form.to.data)
        db.session.commit()
        flash("Test mail queued: it is marked [TEST] in its subject.", "notice")
    except MailerError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    return _back(campaign_id)


@blp.post("/campaigns/<campaign_id>/schedule")
def schedule(campaign_id: str) -> BaseResponse:
    """Schedule for a wall-clock time in a time zone (the browser's by default, else UTC)."""
    form = forms.ScheduleForm()
    form.timezone.choices = _zone_choices()
    if not form.validate_on_submit():
        _flash_errors(form)
        return _back(campaign_id)
    zone = form.timezone.data or form.browser_timezone.data or "UTC"
    if not form.timezone.data and zone not in services.time_zone_names():
        zone = "UTC"
    try:
        send_at = services.aware(form.send_at.data, zone)
        found = campaigns.schedule(campaigns.get(campaign_id), send_at)
        db.session.commit()
        flash(f"Scheduled for {send_at:%Y-%m-%d %H:%M} {zone} "
              f"({found.send_at:%Y-%m-%d %H:%M} UTC).", "notice")
    except MailerError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    return _back(campaign_id)


@blp.post("/campaigns/<campaign_id>/send-now")
def send_now(campaign_id: str) -> BaseResponse:
    if forms.ActionForm().validate_on_submit():
        try:
            campaigns.schedule(campaigns.get(campaign_id), None)
            db.session.commit()
            flash("Sending starts within seconds.", "notice")
        except MailerError as exc:
            db.session.rollback()
            flash(exc.message, "error")
    return _back(campaign_id)


@blp.post(f"/campaigns/<campaign_id>/<any({', '.join(ACTIONS)}):action>")
def campaign_action(campaign_id: str, action: str) -> BaseResponse:
    """Pause, resume or cancel; a move the campaign's state forbids is shown as a message."""
    if forms.ActionForm().validate_on_submit():
        try:
            getattr(campaigns, action)(campaigns.get(campaign_id))
            db.session.commit()
            flash({"pause": "Paused: no new mail goes out until you resume.",
                   "resume": "Resumed.", "cancel": "Cancelled."}[action], "notice")
        except MailerError as exc:
            db.session.rollback()
            flash(exc.message, "error")
    return _back(campaign_id)


@blp.get("/campaigns/<campaign_id>/progress")
def progress(campaign_id: str) -> Response:
    """The campaign's status and aggregate counts (no per-person data), for the page's poll."""
    found = campaigns.get(campaign_id)
    counts = campaigns.stats(found)
    return jsonify({"status": found.status, "counts": counts, **services.progress_of(counts),
                    "final": found.status in (CampaignStatus.FINISHED, CampaignStatus.CANCELLED)
                    and not (counts.get("queued", 0) + counts.get("sending", 0)
                             + counts.get("deferred", 0))})


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


def register(app: Flask) -> None:
    # Sections in modules of their own add their views to `blp` when imported.
    from mailer.admin import api_keys, compose, reports, templates, users  # noqa: F401

    login_manager.user_loader(services.load_user)
    login_manager.unauthorized_handler(unauthorized)
    app.register_blueprint(blp)
