"""Console: one campaign's page. Its counts and live progress, test sends, scheduling, and
the actions its state allows, each that sends or cancels behind a confirmation step.

The life cycle's rules are mailer.campaigns.services'; this module only asks them.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Response as FlaskResponse
from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms, services
from mailer.admin.blueprint import blp, mail_preview
from mailer.campaigns import services as campaigns
from mailer.campaigns.fanout import count_recipients
from mailer.campaigns.models import Campaign, CampaignStatus
from mailer.campaigns.testing import test_recipients
from mailer.errors import MailerError
from mailer.extensions import db

log = logging.getLogger(__name__)

# Statuses in which the campaign has not reached anyone yet: its page shows the audience
# it would reach, not "0 of 0 recipients".
NOT_STARTED = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)
OVER = (CampaignStatus.FINISHED, CampaignStatus.CANCELLED)
ACTIONS = ("pause", "resume", "cancel")


def _test_form() -> forms.TestSendForm:
    """The test form: the logged-in user's address first, then the other test recipients."""
    form = forms.TestSendForm()
    choices = test_recipients()
    mine = current_user.email
    ordered = [mine, *[address for address in choices if address != mine]]
    form.to.choices = [(address, address) for address in ordered if address in choices]
    if request.method == "GET":
        form.to.data = mine
    return form


def _zone_choices() -> list[tuple[str, str]]:
    return [("", "This browser's time zone (UTC if unknown)")] + [
        (name, name) for name in services.time_zone_names()]


def _schedule_form() -> forms.ScheduleForm:
    form = forms.ScheduleForm()
    form.timezone.choices = _zone_choices()
    return form


def _progress(found: Campaign) -> dict[str, Any]:
    """Status and aggregate counts (never anything per person), for the page and its poll."""
    counts = campaigns.stats(found)
    counts.update(services.progress_of(counts))
    return {"status": found.status, "counts": counts, "done": counts["done"],
            "percent": counts["percent"], "started": found.status not in NOT_STARTED,
            "final": found.status in OVER
            and not (counts.get("queued", 0) + counts.get("sending", 0)
                     + counts.get("deferred", 0))}


@blp.get("/campaigns/<campaign_id>")
def campaign(campaign_id: str) -> str:
    """A campaign: what it sends to whom, its progress, tests, and what can be done next."""
    found = campaigns.get(campaign_id)
    progress = _progress(found)
    preview, problem = None, None
    try:
        preview = mail_preview(campaigns.render_preview(found))
    except MailerError as exc:
        problem = exc.message
    audience = _audience(found)
    return render_template(
        "admin/campaign.html", campaign=found, counts=progress["counts"], progress=progress,
        preview=preview, problem=problem, audience=audience, test_form=_test_form(),
        schedule_form=_schedule_form(), allowed=campaigns.allowed_actions(found),
    )


@blp.get("/campaigns/<campaign_id>/progress")
def progress(campaign_id: str) -> FlaskResponse:
    """The campaign's status and aggregate counts (no per-person data), for the page's poll."""
    return jsonify(_progress(campaigns.get(campaign_id)))


def _back(public_id: str) -> BaseResponse:
    return redirect(url_for("admin.campaign", campaign_id=public_id))


def _flash_errors(form: FlaskForm) -> None:
    for messages in form.errors.values():
        for message in messages:
            flash(message, "error")


@blp.post("/campaigns/<campaign_id>/test")
def test_send(campaign_id: str) -> BaseResponse:
    """One test mail to a test recipient chosen from the list (never a typed address)."""
    form = _test_form()
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


def _audience(found: Campaign) -> int | None:
    """How many addresses a campaign not yet started would reach now; None once it runs."""
    if found.status not in NOT_STARTED:
        return None
    return count_recipients(found.topic_id, found.segment or {})


def _confirm_page(found: Campaign, action: str, **extra: Any) -> str:
    return render_template("admin/campaign_confirm.html", campaign=found, action=action,
                           form=forms.ActionForm(), audience=_audience(found), **extra)


@blp.post("/campaigns/<campaign_id>/schedule")
def schedule(campaign_id: str) -> BaseResponse | str:
    """Check the chosen wall-clock time in its zone (the browser's by default, else UTC),
    then ask for confirmation; the confirmed form schedules it."""
    found = campaigns.get(campaign_id)
    form = _schedule_form()
    if not form.validate_on_submit():
        _flash_errors(form)
        return _back(campaign_id)
    zone = form.timezone.data or form.browser_timezone.data or "UTC"
    if not form.timezone.data and zone not in services.time_zone_names():
        zone = "UTC"
    try:
        send_at = services.aware(form.send_at.data, zone)
    except MailerError as exc:
        flash(exc.message, "error")
        return _back(campaign_id)
    if "schedule" not in campaigns.allowed_actions(found):
        flash(f"A {found.status} campaign cannot be scheduled.", "error")
        return _back(campaign_id)
    return _confirm_page(found, "schedule", send_at=send_at, zone=zone,
                         send_at_utc=send_at.astimezone(dt.UTC))


@blp.post("/campaigns/<campaign_id>/schedule/confirmed")
def schedule_confirmed(campaign_id: str) -> BaseResponse:
    form = forms.ActionForm()
    try:
        send_at = dt.datetime.fromisoformat(request.form.get("send_at_utc", ""))
    except ValueError:
        send_at = None
    if not form.validate_on_submit() or send_at is None or send_at.tzinfo is None:
        flash("Choose the time again.", "error")
        return _back(campaign_id)
    try:
        found = campaigns.schedule(campaigns.get(campaign_id), send_at)
        db.session.commit()
        log.info("console campaign scheduled campaign_id=%s", found.id)
        flash(f"Scheduled for {found.send_at:%Y-%m-%d %H:%M} UTC.", "notice")
    except MailerError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    return _back(campaign_id)


@blp.route("/campaigns/<campaign_id>/send-now", methods=["GET", "POST"])
def send_now(campaign_id: str) -> BaseResponse | str:
    """GET: the confirmation step (how many it reaches); POST: sending starts."""
    found = campaigns.get(campaign_id)
    if request.method == "GET":
        if "schedule" not in campaigns.allowed_actions(found):
            flash(f"A {found.status} campaign cannot be sent.", "error")
            return _back(campaign_id)
        return _confirm_page(found, "send_now")
    if forms.ActionForm().validate_on_submit():
        try:
            campaigns.schedule(found, None)
            db.session.commit()
            log.info("console campaign sent campaign_id=%s", found.id)
            flash("Sending starts within seconds.", "notice")
        except MailerError as exc:
            db.session.rollback()
            flash(exc.message, "error")
    return _back(campaign_id)


@blp.get("/campaigns/<campaign_id>/cancel")
def cancel_confirm(campaign_id: str) -> BaseResponse | str:
    """The confirmation step before cancelling."""
    found = campaigns.get(campaign_id)
    if "cancel" not in campaigns.allowed_actions(found):
        flash(f"A {found.status} campaign cannot be cancelled.", "error")
        return _back(campaign_id)
    return _confirm_page(found, "cancel", counts=_progress(found)["counts"])


@blp.post(f"/campaigns/<campaign_id>/<any({', '.join(ACTIONS)}):action>")
def campaign_action(campaign_id: str, action: str) -> BaseResponse:
    """Pause, resume or cancel (a cancel is posted from its confirmation page); a move the
    campaign's state forbids is shown as a message."""
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
