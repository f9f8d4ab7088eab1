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
from mailer.campaigns.models import Campaign
from mailer.errors import MailerError
from mailer.extensions import db, limiter, login_manager
from mailer.messages.mime import OutgoingMail
from mailer.messages.render import Rendered
from mailer.suppressions.services import suppressions_of
from mailer.topics.services import list_topics, topics_by_slug

log = logging.getLogger(__name__)

blp = Blueprint("admin", __name__, url_prefix="/admin")

PUBLIC_ENDPOINTS = frozenset({"admin.login"})
LOGIN_RATE_LIMIT = "5 per minute"


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


@blp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])
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


# -- templates ---------------------------------------------------------------------------------

@blp.get("/templates")
def templates() -> str:
    return render_template("admin/templates.html", names=services.template_names())


@blp.route("/templates/<name>", methods=["GET", "POST"])
def template_preview(name: str) -> tuple[str, int]:
    """One template rendered with sample data the marketer edits as JSON."""
    if name not in services.template_names():
        return render_template("admin/not_found.html", what="template"), 404
    form = forms.TemplatePreviewForm()
    if request.method == "GET":
        form.data.data = services.sample_data(name)
    rendered, problem, status = None, None, 200
    if request.method == "GET" or form.validate_on_submit():
        try:
            rendered = services.preview_template(name, form.data.data)
        except MailerError as exc:
            problem, status = exc.message, 422
    else:
        status = 422
    return render_template("admin/template_preview.html", name=name, form=form,
                           preview=rendered, problem=problem), status


# -- campaigns ---------------------------------------------------------------------------------

@blp.get("/campaigns")
def campaign_list() -> str:
    listed = campaigns.list_campaigns()
    return render_template("admin/campaigns.html", campaigns=listed,
                           counts=services.campaign_counts(listed))


def _mail_preview(mail: OutgoingMail | Rendered) -> dict[str, Any]:
    return {"subject": mail.subject, "html": mail.html, "text": mail.text}


def _field_errors(form: FlaskForm, error: MailerError) -> None:
    """Put a service's per-field messages next to the form's fields of the same name."""
    for name, messages in (error.fields or {}).items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, *(messages if isinstance(messages, list)
                                             else [str(messages)])]


@blp.route("/campaigns/new", methods=["GET", "POST"])
def compose() -> BaseResponse | tuple[str, int]:
    """Compose: fill in, preview (as a sample subscriber gets it), then create the draft."""
    form = forms.ComposeForm()
    form.topic.choices = [("", "Choose a topic")] + [(t.slug, t.name) for t in list_topics()]
    form.template.choices = [("", "Choose a template")] + [
        (name, name) for name in services.template_names()]
    preview, problem, notice = None, None, None
    if form.validate_on_submit():
        if not form.data.raw_data or not form.data.raw_data[0].strip():
            form.data.data = services.sample_data(form.template.data)
            form.data.raw_data = [services.pretty_json(form.data.data)]
            notice = "The data was empty: it now holds the template's variables. Edit them."
        try:
            if request.form.get("action") == "create" and notice is None:
                campaign = campaigns.create(form.name.data, form.topic.data, form.template.data,
                                            form.data.data, form.segment.data)
                db.session.commit()
                flash("Draft saved. Send a test, then schedule it.", "notice")
                return redirect(url_for("admin.campaign", campaign_id=campaign.public_id))
            topic = topics_by_slug([form.topic.data], field="topic")[form.topic.data]
            draft = Campaign(topic=topic, topic_id=topic.id, template=form.template.data,
                             data=form.data.data,
                             segment=campaigns.check_segment(form.segment.data))
            preview = _mail_preview(campaigns.render_preview(draft))
        except MailerError as exc:
            db.session.rollback()
            problem = exc.message
            _field_errors(form, exc)
    failed = request.method == "POST" and (problem is not None or bool(form.errors))
    return render_template("admin/compose.html", form=form, preview=preview, problem=problem,
                           notice=notice), 422 if failed else 200


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
    from mailer.admin import api_keys  # noqa: F401
    from mailer.admin import campaigns as _campaigns  # noqa: F401
    from mailer.admin import contacts as _contacts  # noqa: F401
    from mailer.admin import statistics as _statistics  # noqa: F401
    from mailer.admin import topics as _topics  # noqa: F401

    login_manager.user_loader(services.load_user)
    login_manager.unauthorized_handler(unauthorized)
    app.register_blueprint(blp)
