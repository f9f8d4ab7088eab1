"""The captured-mail page of `mailer dev`: /dev/mail lists what the capture server received.

It answers 404 unless MAILER_CAPTURE_DIR is set, which only `mailer dev` does.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, current_app, render_template

from mailer.devtools.capture import list_captured, read_captured

blp = Blueprint("devmail", __name__, url_prefix="/dev/mail")


def _directory() -> Path:
    directory = current_app.config.get("MAILER_CAPTURE_DIR")
    if not directory:
        abort(404)
    return Path(directory)


def _read(capture_id: str) -> bytes:
    try:
        return read_captured(_directory(), capture_id)
    except (ValueError, FileNotFoundError):
        abort(404)


@blp.get("/")
def index() -> str:
    """The captured mails, newest first."""
    return render_template("dev/mailbox.html", mails=list_captured(_directory(), limit=200))


@blp.get("/<capture_id>")
def show(capture_id: str) -> str:
    """One mail: its headers, text part, and HTML part in a sandboxed frame."""
    raw = _read(capture_id)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    return render_template(
        "dev/mail.html",
        capture_id=capture_id,
        headers=list(message.items()),
        text=text.get_content() if text is not None else None,
        has_html=html is not None,
    )


@blp.get("/<capture_id>/html")
def show_html(capture_id: str) -> Response:
    """The HTML part alone, sandboxed: no scripts, no same-origin access."""
    message = email.message_from_bytes(_read(capture_id), policy=email.policy.default)
    html = message.get_body(("html",))
    if html is None:
        abort(404)
    response = Response(html.get_content(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )
    return response


@blp.get("/<capture_id>.eml")
def raw(capture_id: str) -> Response:
    return Response(_read(capture_id), mimetype="message/rfc822")


def register(app: Flask) -> None:
    app.register_blueprint(blp)
