"""The console's webhooks section (admins only): the endpoints with their events, adding one
(its secret shown once), deleting one after a confirmation step, and each one's delivery log
(status, attempts, last error; never a body)."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectMultipleField, StringField, widgets
from wtforms.validators import DataRequired, Length

from mailer.admin import forms
from mailer.admin.access import admin_only
from mailer.admin.blueprint import blp
from mailer.errors import NotFound, ValidationFailed
from mailer.extensions import db
from mailer.webhooks import services as webhooks

log = logging.getLogger(__name__)


class WebhookForm(FlaskForm):
    """A new endpoint: its URL and the events it receives (CSRF by FlaskForm)."""

    url = StringField("URL", validators=[DataRequired(), Length(max=2000)])
    events = SelectMultipleField(
        "Events", choices=list(webhooks.EVENT_TYPES),
        validators=[DataRequired(message="Choose at least one event.")],
        option_widget=widgets.CheckboxInput(), widget=widgets.ListWidget(prefix_label=False))


def _page(form: WebhookForm, secret: str | None = None, created: str | None = None,
          status: int = 200) -> tuple[str, int]:
    return render_template("admin/webhooks.html", endpoints=webhooks.list_endpoints(),
                           form=form, secret=secret, created=created), status


@blp.get("/webhooks")
@admin_only
def webhook_list() -> tuple[str, int]:
    """Every endpoint with its events, and the form to add one."""
    return _page(WebhookForm())


@blp.post("/webhooks")
@admin_only
def webhook_add() -> tuple[str, int]:
    """Add an endpoint; the answer shows its secret, this once (rendered, never flashed into
    the session cookie)."""
    form = WebhookForm()
    if not form.validate_on_submit():
        return _page(form, status=400)
    try:
        endpoint, secret = webhooks.create_endpoint(form.url.data.strip(), form.events.data)
    except ValidationFailed as refused:
        for messages in refused.fields.values():
            form.url.errors = [*form.url.errors, *messages]
        return _page(form, status=400)
    db.session.commit()
    log.info("console webhook added id=%s", endpoint.public_id)
    return _page(WebhookForm(formdata=None), secret=secret, created=endpoint.public_id)


@blp.get("/webhooks/<webhook_id>")
@admin_only
def webhook_log(webhook_id: str) -> tuple[str, int]:
    """An endpoint's delivery log, newest first."""
    try:
        endpoint = webhooks.get_endpoint(webhook_id)
    except NotFound:
        return render_template("admin/not_found.html", what="webhook"), 404
    return render_template("admin/webhook_log.html", endpoint=endpoint,
                           deliveries=webhooks.deliveries_of(endpoint)), 200


@blp.route("/webhooks/<webhook_id>/delete", methods=["GET", "POST"])
@admin_only
def webhook_delete(webhook_id: str) -> BaseResponse | tuple[str, int]:
    """GET: what deleting means, and the one button; POST (CSRF): delete it."""
    form = forms.ActionForm()
    try:
        endpoint = webhooks.get_endpoint(webhook_id)
    except NotFound:
        return render_template("admin/not_found.html", what="webhook"), 404
    if form.validate_on_submit():
        webhooks.delete_endpoint(webhook_id)
        db.session.commit()
        flash(f"The webhook to {endpoint.url} is deleted: it is sent nothing more.", "notice")
        return redirect(url_for("admin.webhook_list"))
    return render_template("admin/webhook_delete.html", endpoint=endpoint, form=form), (
        200 if not form.is_submitted() else 400)
