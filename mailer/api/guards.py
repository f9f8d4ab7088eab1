"""Checks every API request passes before its view: authentication and the card-number guard."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from mailer.apikeys.services import authenticate
from mailer.card_numbers import holds_card_number
from mailer.errors import API_PREFIX, CardNumberRefused, Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])


def refuse_card_numbers() -> None:
    """Refuse (422, nothing stored) an API request whose body, query or path holds a card number."""
    if not request.path.startswith(API_PREFIX):
        return
    if request.view_args and holds_card_number(list(request.view_args.values())):
        raise CardNumberRefused()
    if request.args and holds_card_number(list(request.args.lists())):
        raise CardNumberRefused()
    if request.is_json and holds_card_number(request.get_json(silent=True)):
        raise CardNumberRefused()


def require_scope(scope: str) -> Callable[[F], F]:
    """Decorate a view: it needs a bearer API key holding `scope` (401 without a key, 403 without
    the scope). The key row is left in `g.api_key`."""

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
