"""Checks every API request passes before its view: authentication and the card-number guard."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from flask_limiter.util import get_qualified_name

from mailer.apikeys.services import authenticate
from mailer.card_numbers import MIN_DIGITS, strings_in, text_holds_card_number
from mailer.errors import (
    API_PREFIX,
    CardNumberRefused,
    Forbidden,
    InvalidJson,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from mailer.extensions import limiter

F = TypeVar("F", bound=Callable[..., Any])


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The one request header the service stores (with the idempotency record), so it is
# checked like the body.
IDEMPOTENCY_HEADER = "Idempotency-Key"


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _takes_json_body(endpoint: str | None, method: str) -> bool:
    """Whether the view of an API endpoint and method reads a JSON body (declares a `json`
    argument schema with flask-smorest). Asked once per endpoint and method, then cached:
    the answer is fixed when the app is built."""
    if endpoint is None or method not in _BODY_METHODS:
        return False
    known: dict[tuple[str, str], bool] = current_app.extensions.setdefault(
        "mailer.json_endpoints", {})
    takes = known.get((endpoint, method))
    if takes is None:
        view = current_app.view_functions.get(endpoint)
        handler = getattr(getattr(view, "view_class", None), method.lower(), view)
        parameters = (getattr(handler, "_apidoc", {}).get("arguments", {})
                      .get("parameters", []))
        takes = known[(endpoint, method)] = any(
            parameter.get("in") == "json" for parameter in parameters)
    return takes


def check_media_type() -> None:
    """Refuse with 415 a body that is not JSON sent to an endpoint that reads JSON: read as
    JSON it would be no body at all, and the caller would be told its fields are missing.
    A request with neither a body nor a content type passes (the schema says what is
    missing); `POST /api/v1/inbound` reads message/rfc822 and declares no JSON body."""
    if request.is_json or not _takes_json_body(request.endpoint, request.method):
        return
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding")
    if request.mimetype or has_body:
        raise UnsupportedMediaType(
            f"The request body must be JSON, sent with 'Content-Type: application/json' "
            f"(not '{request.mimetype or 'none'}').",
            fields={"_body": ["Send the body as application/json."]},
        )


# Path parts that name what this service issued (32 hex digits): a lookup, never stored, and
# about one id in a hundred holds a run of decimal digits that passes the card check.
ISSUED_IDS = frozenset({"path.message_id", "path.campaign_id"})


def check_request_data() -> None:
    """Before any API view: refuse (nothing stored) a body that is not JSON where JSON is read
    (415 unsupported_media_type), a request whose body, query or path holds
    a payment card number (422 card_number_refused), text no database can keep (NUL, lone
    surrogates: 422 invalid_text), or JSON nested too deeply to read (400 invalid_json)."""
    if not request.path.startswith(API_PREFIX):
        return
    check_media_type()
    inputs: dict[str, Any] = {"path": dict(request.view_args or {}),
                              # Parsing an empty query string still costs a parser.
                              "query": dict(request.args.lists()) if request.query_string else {}}
    idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idempotency_key is not None:
        inputs["header"] = {IDEMPOTENCY_HEADER: idempotency_key}
    if request.is_json:
        try:
            inputs["body"] = request.get_json(silent=True)
        except RecursionError as exc:
            raise InvalidJson("The request body is nested too deeply.") from exc
    # One pass for both checks; unstorable text anywhere is reported before a card number.
    card_at = None
    for where, text in strings_in(inputs):
        if _UNSTORABLE.search(text):
            field = where.partition(".")[2] or where
            raise ValidationFailed(
                "Text may not hold NUL characters or lone surrogates.", code="invalid_text",
                fields={field: ["Holds a NUL character or a lone surrogate."]},
            )
        # Shorter than a card number's digits alone: cannot hold one.
        if (card_at is None and where not in ISSUED_IDS and len(text) >= MIN_DIGITS
                and text_holds_card_number(text)):
            card_at = where or "_body"
    if card_at is not None:
        raise CardNumberRefused(fields={card_at.partition(".")[2] or card_at: ["card number"]})


@limiter.skip_when
def unlimited_api_request() -> bool:
    """Spare an API request Flask-Limiter's per-request work (resolving and evaluating limits
    for the route costs about 1/20 of a send) when its endpoint has no limit at all: the API
    authenticates every call with a key and has no per-client limits. Whether an endpoint has
    any (default, application, blueprint or its own) is asked of Flask-Limiter itself, once
    per endpoint, so a limit set on an API route or configured for the app still applies."""
    endpoint = request.endpoint
    if endpoint is None or not request.path.startswith(API_PREFIX):
        return False
    known: dict[str, bool] = current_app.extensions.setdefault("mailer.unlimited_endpoints", {})
    unlimited = known.get(endpoint)
    if unlimited is None:
        view = current_app.view_functions.get(endpoint)
        name = get_qualified_name(view) if view is not None else ""
        manager = limiter.limit_manager
        unlimited = not any(
            limits
            for in_middleware in (True, False)
            for limits in manager.resolve_limits(current_app, endpoint, request.blueprint, name,
                                                 in_middleware=in_middleware)
        )
        known[endpoint] = unlimited
    return unlimited


def require_scope(scope: str) -> Callable[[F], F]:
    """Decorate a view: it needs a bearer API key holding `scope` (401 without a key, 403 without
    the scope). The key (`apikeys.services.AuthenticatedKey`: id, name, scopes) is left in
    `g.api_key`."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthorized()
            row = authenticate(key.strip())
            if row is None:
                raise Unauthorized("The API key is unknown or revoked.")
            if scope not in row.scopes:
                raise Forbidden(f"The API key lacks the '{scope}' scope.", extra={"scope": scope})
            g.api_key = row
            return view(*args, **kwargs)

        wrapper._mailer_scope = scope  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator
