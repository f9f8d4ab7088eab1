"""Helpers of the browser journeys: a campaign's status, and a worker run until it ends."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from mailer.campaigns.models import Campaign
from mailer.extensions import db
from tests.delivery.helpers import run_worker_in_thread
from tests.smtp_server import ScriptedSmtpServer


def campaign_status(public_id: str) -> str:
    """The campaign's status as committed now (the session starts afresh)."""
    db.session.remove()
    return db.session.scalar(select(Campaign.status).where(Campaign.public_id == public_id))


def run_worker_until_finished(app: Flask, smtp: ScriptedSmtpServer, public_id: str) -> None:
    """A worker (its scheduler fans the campaign out) until the campaign is finished; in a
    thread, as Playwright owns this thread's event loop."""
    run_worker_in_thread(app, smtp.url, timeout=60,
                         until=lambda: campaign_status(public_id) == "finished")
