"""One error type hierarchy for the domain, and the handlers that turn errors into responses.

Every API error, whether raised by the domain, by request parsing, by routing
(404/405), by the body size limit (413) or by a bug (500), leaves as
`{"error": {"code", "message", "fields"}}`. Pages get a short HTML page instead.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

API_PREFIX = "/api/"


class MailerError(Exception):
    """A refusal the caller can act on: carries an HTTP status and a stable code."""

    status = 400
    code = "bad_request"
    message = "The request could not be processed."
    headers: dict[str, str] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if code:
            self.code = code
        self.fields = fields or {}
        self.extra = extra or {}


class ValidationFailed(MailerError):
    status = 422
    code = "validation_error"
    message = "Some fields are not valid."


class CardNumberRefused(MailerError):
    status = 422
    code = "card_number_refused"
    message = (
        "The request holds what looks like a payment card number; card numbers are never "
        "stored, so nothing of the request was kept."
    )


class InvalidJson(MailerError):
    status = 400
    code = "invalid_json"
    message = "The request body is not valid JSON."


class UnsupportedMediaType(MailerError):
    status = 415
    code = "unsupported_media_type"
    message = "The request body must be JSON, sent with 'Content-Type: application/json'."


class NotFound(MailerError):
    status = 404
    code = "not_found"
    message = "No such resource."


class Conflict(MailerError):
    status = 409
    code = "conflict"
    message = "The request conflicts with the current state."


class Unauthorized(MailerError):
    status = 401
    code = "unauthorized"
    message = "A valid API key is required: send 'Authorization: Bearer <key>'."
    headers = {"WWW-Authenticate": 'Bearer realm="mailer"'}


class Forbidden(MailerError):
    status = 403
    code = "forbidden"
    message = "The API key lacks the scope this endpoint needs."


# Codes for the HTTP errors raised outside the domain (routing, parsing, limits).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
}


def envelope(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None, /, **extra: Any
) -> Response:
    """Build the API's JSON error response."""
    body: dict[str, Any] = {"code": code, "message": message, "fields": fields or {}}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    return response


def _wants_json() -> bool:
    return request.path.startswith(API_PREFIX)


# What a person reads on an error page: plain words, not the protocol's.
PAGE_WORDS: dict[int, tuple[str, str]] = {
    400: ("That did not work", "The page could not use what was sent. If you filled in a "
          "form, go back, reload the page and try again."),
    401: ("Please log in", "This page needs you to log in first."),
    403: ("Not allowed", "You are not allowed to do this."),
    404: ("Page not found", "There is no page at this address. The link may be mistyped or "
          "out of date."),
    405: ("That did not work", "This page cannot be used that way."),
    410: ("This link has expired", "The link is too old to use."),
    413: ("Too large", "What was sent is too large."),
    422: ("That did not work", "Some of what was sent could not be used."),
    429: ("Too many tries", "There were too many requests from your connection in a short "
          "time. Please wait a minute, then try again."),
    500: ("Something went wrong", "Something went wrong on our side. Please try again in a "
          "moment."),
}


def _html(status: int, title: str | None, message: str | None,
          hint: str | None = None) -> tuple[str, int]:
    """An error page of the service, in its layout (the console's link leads back to it)."""
    default_title, default_message = PAGE_WORDS.get(status, PAGE_WORDS[400 if status < 500
                                                                       else 500])
    in_console = request.path.startswith("/admin/")
    try:
        page = render_template(
            "pages/error.html", status=status, title=title or default_title,
            message=message or default_message, hint=hint,
            back_url="/admin/" if in_console else "/",
            back_label="Back to the console" if in_console else "Go to the front page")
    except Exception:  # an error page must never fail: plain text as the last resort
        log.exception("error page failed to render")
        page = escape(f"{title or default_title}\n\n{message or default_message}")
    return page, status


def _fields_from_webargs(messages: Any) -> dict[str, Any]:
    """Flatten webargs' {"json": {...}, "query": {...}} into {field: [messages]}."""
    fields: dict[str, Any] = {}
    if isinstance(messages, dict):
        for location_errors in messages.values():
            if isinstance(location_errors, dict):
                fields.update(location_errors)
            elif location_errors:
                fields.setdefault("_body", []).extend(
                    location_errors if isinstance(location_errors, list) else [location_errors]
                )
    return fields


def handle_mailer_error(error: MailerError) -> Response | tuple[str, int]:
    if _wants_json():
        response = envelope(error.status, error.code, error.message, error.fields, **error.extra)
        response.headers.update(error.headers)
        return response
    title = PAGE_WORDS.get(error.status, PAGE_WORDS[400])[0]
    return _html(error.status, title, error.message)


def handle_http_exception(error: HTTPException) -> Response | tuple[str, int]:
    status = error.code or 500
    if not _wants_json():
        # Werkzeug's own descriptions speak HTTP; the page speaks plainly. A refused CSRF
        # token (a 400 from Flask-WTF) says what to do about it.
        hint = None
        if isinstance(error, CSRFError):
            hint = ("The form had expired or did not come from this site. Reload the page "
                    "and send it again.")
        return _html(status, None, None, hint)
    code = HTTP_CODES.get(status, "error")
    message = error.description or error.name
    fields: dict[str, Any] = {}
    data = getattr(error, "data", None) or {}
    if "messages" in data:  # webargs parsing errors
        fields = _fields_from_webargs(data["messages"])
        if status == 422:
            message = "Some fields are not valid."
        elif status == 400:
            code, message = "invalid_json", "The request body is not valid JSON."
    if status == 405:
        message = f"{request.method} is not allowed on {request.path}."
    elif status == 404:
        message = f"No resource at {request.path}."
    elif status == 413:
        message = "The request body is larger than the 1 MB limit."
    response = envelope(status, code, message, fields)
    if isinstance(error, HTTPException) and error.code == 405:
        valid = getattr(error, "valid_methods", None)
        if valid:
            response.headers["Allow"] = ", ".join(valid)
    return response


def handle_unexpected(error: Exception) -> Response | tuple[str, int]:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    incident = uuid.uuid4().hex[:12]
    # The route's rule, not the path: a path may hold an address or a token.
    rule = request.url_rule.rule if request.url_rule is not None else None
    log.exception("unhandled error incident=%s route=%s", incident, rule,
                  extra={"event": "unhandled_error", "incident": incident})
    message = f"Something went wrong on our side (incident {incident})."
    if _wants_json():
        return envelope(500, "internal_error", message)
    return _html(500, None, f"{PAGE_WORDS[500][1]} (Incident {incident}.)")


def register_error_handlers(app: Flask) -> None:
    """Route every error of the app through the handlers above."""
    app.register_error_handler(MailerError, handle_mailer_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
