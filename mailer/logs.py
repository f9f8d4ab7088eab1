"""The service's own log lines: JSON objects or text, each line of a request with its id.

`MAILER_LOG_FORMAT=json` (production's default) writes one JSON object a line with a
`timestamp`, `level`, `logger`, `message` and the ids a call passes as `extra=` (an
`event` name, `message_id`, `campaign_id`, ...); `text` writes the same as a readable line.
Every line written while a request is handled carries its `request_id`, which the response
returns as `X-Request-ID`. Each request logs one line at INFO with the route's rule
(`/api/v1/contacts/<email>`), never the path, which may hold an address or a token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# A request id a proxy sends is kept only if it is short and plain: it is written into logs.
_GIVEN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id"}

log = logging.getLogger(__name__)
request_log = logging.getLogger("mailer.requests")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with `extra=`, as JSON-ready values."""
    found: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _RECORD_ATTRIBUTES or key.startswith("_") or value is None:
            continue
        found[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return found


class RequestIdFilter(logging.Filter):
    """Put the id of the request being handled (if any) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp (UTC, ISO 8601), level, logger, message, ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, the ids of `extra=` after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _extras(record)
        if getattr(record, "request_id", None):
            fields = {"request_id": record.request_id, **fields}  # type: ignore[attr-defined]
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the line
        pairs = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{head} {pairs}{newline}{rest}"


class _ServiceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler create_app() installs on the root logger (told apart from others, so a
    second app in one process replaces it instead of doubling every line)."""


def configure(app: Flask) -> None:
    """Send every logger's lines (but gunicorn's own, which do not propagate) to standard
    error in MAILER_LOG_FORMAT, at MAILER_LOG_LEVEL."""
    handler = _ServiceHandler(sys.stderr)
    json_format = app.config.get("MAILER_LOG_FORMAT", "text") == "json"
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(app.config.get("MAILER_LOG_LEVEL", "INFO"))


def service_logging_configured() -> bool:
    """True once configure() has set up the root logger in this process."""
    return any(isinstance(h, _ServiceHandler) for h in logging.getLogger().handlers)


def _start_request() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _GIVEN_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _log_request(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    rule = request.url_rule.rule if request.url_rule is not None else None
    request_log.info(
        "%s %s %s", request.method, rule or "(no route)", response.status_code,
        extra={"event": "request", "method": request.method, "route": rule,
               "endpoint": request.endpoint, "status": response.status_code,
               "duration_ms": (round((time.perf_counter() - started) * 1000, 1)
                               if started is not None else None)})
    return response


def init_app(app: Flask) -> None:
    """Configure logging and log each request; call before anything else registers a
    before_request, so that even a refused request (429, 503) has its id."""
    configure(app)
    app.before_request(_start_request)
    app.after_request(_log_request)


def warn_doubtful_settings(app: Flask) -> None:
    """Log a warning for production settings that work but are likely a mistake (production
    refuses only the contract's list; see config.refuse_unsafe_production)."""
    if app.config.get("ENV_NAME") != "production":
        return
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        log.warning("production on SQLite: one machine, writes one at a time; "
                    "PostgreSQL is the production database (MAILER_DATABASE_URL)",
                    extra={"event": "doubtful_setting", "setting": "MAILER_DATABASE_URL"})
    if (app.config.get("MAILER_RATELIMIT_ENABLED", True)
            and str(app.config.get("RATELIMIT_STORAGE_URI", "")).startswith("memory://")):
        log.warning("rate limits count in memory://: each process (every gunicorn worker, "
                    "every host) counts alone, so the limits multiply by their number; set "
                    "MAILER_RATELIMIT_STORAGE_URL=redis://... when running more than one",
                    extra={"event": "doubtful_setting",
                           "setting": "MAILER_RATELIMIT_STORAGE_URL"})
