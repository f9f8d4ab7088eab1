"""The embeddable signup form: a snippet for a page on another site, and its POST to /subscribe.

`GET /embed/subscribe?topics=SLUG[,SLUG]` answers an HTML fragment: one `<form>` posting to
the absolute URL of `/subscribe`, an email field, the chosen public topics, a hidden signed
form token (purpose `embed_form`, with an expiry) and the honeypot. On another site's page the
session's CSRF token cannot be had (the service's cookie is not sent there), so the form token
stands in for it, and the browser's `Origin` header says which site's page sent the form:

- from an origin listed in `MAILER_EMBED_ORIGINS`: the form token is checked instead of the
  CSRF token, and the signup goes on exactly as the page's own (same per-client limits, same
  confirmation mail and per-address cap, the same answer whatever the address). The answer is
  the service's thank-you page, or JSON with CORS headers for that origin when the request asks
  for `application/json` (as `fetch` does);
- from any other origin: 403, and nothing is read or changed.

A request with no `Origin` (and no `Referer`) header, with the service's own origin, or with
`Origin: null` and no form token (the service's own pages send no referrer, and browsers then
send `null`), is the service's own page: the session's CSRF token applies, as before.
"""

from __future__ import annotations

import functools
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
)
from werkzeug.datastructures import MultiDict

from mailer.errors import envelope
from mailer.pages import forms
from mailer.pages.mailing import after_the_answer, sign_up
from mailer.tokens import Purpose, TokenExpired, TokenInvalid, sign, verify
from mailer.topics.models import Topic
from mailer.topics.services import list_topics

blp = Blueprint("embed", __name__)

# Paths whose answers carry CORS headers for a listed origin.
CORS_PATHS = frozenset({"/subscribe", "/embed/subscribe"})
PREFLIGHT_MAX_AGE = 600


# -- origins -----------------------------------------------------------------------------------

def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def request_origin() -> str | None:
    """The origin of the page that sent the request: the `Origin` header (browsers send it
    with every POST), else the `Referer`'s origin; None when neither names one. An opaque
    origin (`null`: a sandboxed frame, a file) is kept as "null", which no list holds."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return "null" if origin.strip() == "null" else (_origin_of(origin.strip()) or "null")
    referer = request.headers.get("Referer")
    return _origin_of(referer) if referer else None


def own_origins() -> set[str]:
    """The service's own origins: MAILER_BASE_URL's and the one this request came to."""
    own = {_origin_of(request.host_url)}
    own.add(_origin_of(current_app.config["MAILER_BASE_URL"]))
    return {origin for origin in own if origin}


def embed_origins() -> list[str]:
    return list(current_app.config.get("MAILER_EMBED_ORIGINS") or [])


def is_cross_origin() -> bool:
    """Whether the request came from a page on another origin than the service's own.

    `Origin: null` says nothing: browsers send it for any POST from a page whose referrer
    policy is `no-referrer`, as the service's own pages' is. It counts as cross-origin only
    for an embedded form (one with a form token), which is then refused; the service's own
    form goes on to its CSRF check."""
    origin = request_origin()
    if origin == "null":
        return "form_token" in request.form or bool(request.is_json)
    return origin is not None and origin not in own_origins()


def listed_origin() -> str | None:
    """The request's origin when MAILER_EMBED_ORIGINS lists it, else None."""
    origin = request_origin()
    return origin if origin is not None and origin in embed_origins() else None


def add_cors_headers(response: Response) -> Response:
    """CORS for a listed origin on the embed's paths (never `*`, never credentials); every
    answer there varies by Origin, so no cache hands one site's answer to another."""
    if request.path not in CORS_PATHS:
        return response
    response.vary.add("Origin")
    origin = listed_origin()
    if origin is not None and request.headers.get("Origin"):
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


# -- the snippet -------------------------------------------------------------------------------

def _chosen_topics(slugs: str | None) -> list[Topic]:
    """The public topics named (all public topics when none are); 404 for one that is not."""
    public = {t.slug: t for t in list_topics(public_only=True)}
    if not slugs:
        chosen = list(public.values())
    else:
        wanted = list(dict.fromkeys(s.strip() for s in slugs.split(",") if s.strip()))
        unknown = [slug for slug in wanted if slug not in public]
        if unknown:
            abort(404, f"No public topic {unknown[0]!r}.")
        chosen = [public[slug] for slug in wanted]
    if not chosen:
        abort(404, "There is no public topic to subscribe to.")
    return chosen


def form_token(topics: list[Topic]) -> str:
    """A signed token for a form offering `topics`; valid for MAILER_EMBED_FORM_MAX_AGE."""
    return sign(Purpose.EMBED_FORM, {"topics": [t.slug for t in topics]})


def snippet(topics: list[Topic]) -> str:
    """The HTML fragment of the form for `topics` (the snippet a site puts on its page)."""
    base_url = current_app.config["MAILER_BASE_URL"]
    return render_template("pages/embed_form.html", action=f"{base_url}/subscribe",
                           topics=topics, token=form_token(topics),
                           suffix=secrets.token_hex(3))


@blp.get("/embed/subscribe")
def embed_snippet() -> Response:
    """The snippet for `?topics=SLUG[,SLUG]` (public topics; all of them when not given)."""
    response = make_response(snippet(_chosen_topics(request.args.get("topics"))))
    # The token in it carries a time: no cache keeps one snippet for everybody.
    response.headers["Cache-Control"] = "no-store"
    return response


# -- its POST ----------------------------------------------------------------------------------

def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > 0


def _submitted() -> MultiDict[str, Any]:
    """The form's fields: form-encoded or multipart as a form sends them, or a JSON object
    {"email", "topics": [...], "form_token", "website"} from a script."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return MultiDict()
        topics = body.get("topics")
        values: list[tuple[str, Any]] = [
            (name, str(body[name])) for name in ("email", "form_token", "website")
            if isinstance(body.get(name), str)]
        if isinstance(topics, list):
            values.extend(("topics", str(slug)) for slug in topics if isinstance(slug, str))
        return MultiDict(values)
    return MultiDict(request.form)


def _offered(token: str) -> list[str]:
    """The topic slugs a genuine, unexpired form token offers; raises TokenInvalid."""
    payload = verify(Purpose.EMBED_FORM, token,
                     max_age=current_app.config["MAILER_EMBED_FORM_MAX_AGE"])
    slugs = payload.get("topics") if isinstance(payload, dict) else None
    if not isinstance(slugs, list) or not all(isinstance(s, str) for s in slugs):
        raise TokenInvalid("token invalid")
    return slugs


def _refused(status: int, code: str, message: str, fields: dict[str, Any] | None = None,
             data: MultiDict[str, Any] | None = None) -> Response | tuple[str, int]:
    """A submission that cannot go on. JSON for a script; for a plain form, the service's own
    signup page with what was typed, so the person can check it and send it from there."""
    if _wants_json():
        return envelope(status, code, message, fields)
    public = list_topics(public_only=True)
    page_form = forms.SubscribeForm(formdata=None)
    page_form.topics.choices = [(t.slug, t.name) for t in public]
    if data is not None:
        page_form.email.data = data.get("email", "")
        page_form.topics.data = [s for s in data.getlist("topics")
                                 if s in {t.slug for t in public}]
    for name, messages in (fields or {}).items():
        field = getattr(page_form, name, None)
        if field is not None:
            field.errors = list(messages)
    return render_template("pages/subscribe.html", form=page_form, topics=public,
                           embed_problem=message), status


def cross_origin_subscribe() -> Response | tuple[str, int]:
    """POST /subscribe from a page on another origin: a listed one signs up through the form
    token; any other gets 403 and nothing is read or changed."""
    if listed_origin() is None:
        abort(403, "This signup form may not be sent from that site.")
    data = _submitted()
    try:
        offered = _offered(data.get("form_token", ""))
    except TokenExpired:
        return _refused(422, "form_expired", "The form was too old. Please check your choice "
                        "and send it again.", data=data)
    except TokenInvalid:
        return _refused(400, "form_invalid", "The form's token is missing or not ours. Please "
                        "sign up here.", data=data)
    public = {t.slug: t for t in list_topics(public_only=True)}
    form = forms.EmbedSubscribeForm(formdata=data, meta={"csrf": False})
    form.topics.choices = [(slug, public[slug].name) for slug in offered if slug in public]
    if not form.validate():
        fields = {name: list(errors) for name, errors in form.errors.items()}
        return _refused(422, "validation_error", "Some fields are not valid.", fields, data)
    message = ("If this address needs to confirm, we have sent it a mail. Open the link in it "
               "to confirm your subscription.")
    if _wants_json():
        answer = jsonify({"status": "check_inbox", "message": message})
    else:
        answer = make_response(render_template("pages/check_inbox.html",
                                               email=form.email.data))
    if not form.is_bot():
        # After the answer, as the page's own form does: its timing tells nothing either.
        after_the_answer(answer, "signup", functools.partial(
            sign_up, form.email.data, form.topics.data, False))
    return answer


def preflight() -> Response:
    """OPTIONS /subscribe: CORS preflight for a listed origin (a script sending JSON); 403 for
    another origin; the usual answer when no Origin is sent."""
    if request.headers.get("Origin") is None:
        return current_app.make_default_options_response()
    if listed_origin() is None:
        abort(403, "This signup form may not be sent from that site.")
    response = make_response("", 204)
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
    response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


def register(app: Flask) -> None:
    app.register_blueprint(blp)
    app.after_request(add_cors_headers)
