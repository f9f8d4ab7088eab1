"""The service's front page (`GET /`): what this is, and the ways in and out."""

from __future__ import annotations

from flask import render_template

from mailer.pages.routes import blp
from mailer.topics.services import list_topics


@blp.get("/")
def home() -> str:
    """A short landing page: sign up (when a topic is offered), leave, manage."""
    return render_template("pages/home.html", topics=list_topics(public_only=True))
