"""GET /healthz: the process is up and its database answers."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mailer.extensions import db

log = logging.getLogger(__name__)


def healthz() -> tuple[dict[str, str], int]:
    """200 {"status": "ok"} when the database answers, else 503 {"status": "unavailable"}."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.warning("health check: database unreachable")
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok"}, 200


def register(app: Flask) -> None:
    app.add_url_rule("/healthz", "healthz", healthz)
