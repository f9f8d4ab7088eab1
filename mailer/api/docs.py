"""The error answers each API operation lists in the OpenAPI document, with the error envelope.

flask-smorest documents only a `default` error and the 422 of an argument schema; a caller
writing a client needs to know which 4xx an operation can give and what `code` it then
carries. Each view says so with `@errors(blp, ...)`, built from the pieces below, which name
the codes that mailer.errors and the services raise.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar

from flask_smorest import Blueprint

from mailer.extensions import ErrorEnvelopeSchema

F = TypeVar("F", bound=Callable[..., Any])

Answers = dict[int, str]

# Every operation behind a key (all but the OpenAPI document).
KEYED: Answers = {
    401: "`unauthorized`: no API key, or an unknown or revoked one.",
    403: "`forbidden`: the key lacks the scope the operation needs.",
    # The guard before every view reads the path, the query and the body.
    422: "`card_number_refused`: the request holds a payment card number; `invalid_text`: "
         "it holds NUL or a lone surrogate. Nothing is stored.",
}

# Every operation that reads a JSON body.
JSON_BODY: Answers = {
    400: "`invalid_json`: the body is not valid JSON (or is nested too deeply).",
    413: "`payload_too_large`: the body is over 1 MB.",
    415: "`unsupported_media_type`: the body is not sent as `application/json`.",
    422: "`validation_error`: a field of the body is missing, unknown or invalid "
         "(`fields` names each).",
}

# Operations on /contacts/<email>.
CONTACT_PATH: Answers = {
    422: "`validation_error`: the address in the path is not a valid address "
         "(`fields.email`).",
}


def merged(*parts: Answers) -> Answers:
    """One description per status: the parts' texts for a status joined, in order, so that
    e.g. the 422 of the guard and the 422 of the body schema are both told."""
    out: Answers = {}
    for part in parts:
        for status, text in part.items():
            out[status] = f"{out[status]} {text}" if status in out else text
    return out


def errors(blp: Blueprint, *parts: Answers) -> Callable[[F], F]:
    """Decorate a view: document each 4xx answer of `parts` with the error envelope as its
    body. Place it under `@blp.arguments` so that its 422 replaces the argument schema's
    bare one."""
    answers = merged(*parts)

    def decorator(view: F) -> F:
        documented: Any = view
        for status in sorted(answers, reverse=True):
            documented = blp.alt_response(
                status, schema=ErrorEnvelopeSchema,
                description=f"{HTTPStatus(status).phrase}. {answers[status]}",
            )(documented)
        # Keep the documentation, not the call layers: each alt_response wrapper would
        # cost every request a call through current_app.
        view._apidoc = documented._apidoc  # type: ignore[attr-defined]
        return view

    return decorator


# Operations that render a template (sends, campaigns, test sends).
# Operations that send a template: the template decides the kind of mail.
CATEGORY: Answers = {
    422: "`category_mismatch`: `category` differs from the template's declared category "
         "(the template decides the kind of mail), or the template is of a kind this "
         "operation does not send (campaigns: promotional only; a notice; one of the "
         "service's own mails). Nothing is queued or created.",
}

RENDER: Answers = {
    422: "`template_error`: no such template, or it does not render with `data`; "
         "`header_injection`: a line break in the subject; `not_configured`: a setting the "
         "mail needs (sender, postal address) is missing.",
}
