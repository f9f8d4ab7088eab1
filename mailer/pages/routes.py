"""Public pages (server-rendered HTML): signup, confirm, unsubscribe, preferences."""

from __future__ import annotations

import functools

from flask import Blueprint, Flask, Response, current_app, make_response, render_template, request

from mailer.consent import confirmation, preferences
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.consent.unsubscribe import LinkTarget, Scope, read_token, topic_name, unsubscribe
from mailer.extensions import csrf, db, limiter
from mailer.pages import forms
from mailer.pages.mailing import after_the_answer, send_preference_link, sign_up
from mailer.tokens import TokenExpired, TokenInvalid
from mailer.topics.services import list_topics

blp = Blueprint("pages", __name__)


def page_limit() -> str:
    return current_app.config["MAILER_PAGE_RATE_LIMIT"]


def _invalid_link() -> tuple[str, int]:
    return render_template("pages/invalid_link.html"), 400


@blp.route("/subscribe", methods=["GET", "POST"])
@limiter.limit(page_limit, methods=["POST"])
def subscribe() -> Response | tuple[str, int]:
    """Sign up for public topics; the answer is the same for new, pending and subscribed."""
    topics = list_topics(public_only=True)
    form = forms.SubscribeForm()
    form.topics.choices = [(t.slug, t.name) for t in topics]
    if request.method == "GET" and len(topics) == 1:
        form.topics.data = [topics[0].slug]
    if form.validate_on_submit():
        answer = make_response(render_template("pages/check_inbox.html", email=form.email.data))
        if not form.is_bot():
            # After the answer, so that not even its timing tells a new address from a
            # pending or subscribed one.
            after_the_answer(answer, "signup", functools.partial(
                sign_up, form.email.data, form.topics.data, bool(form.partner_sharing.data)))
        return answer
    status = 422 if request.method == "POST" else 200
    return render_template("pages/subscribe.html", form=form, topics=topics), status


@blp.get("/confirm/<token>")
def confirm_page(token: str) -> tuple[str, int] | str:
    """Double opt-in: the address confirms; a second click is harmless."""
    try:
        confirmed = confirmation.confirm(token)
    except TokenExpired:
        form = forms.ResendConfirmationForm(token=token)
        return render_template("pages/confirm_expired.html", form=form), 410
    except (TokenInvalid, LookupError):
        return _invalid_link()
    db.session.commit()
    subscribed = [s.topic for s in confirmed.contact.subscriptions
                  if s.state == SubscriptionState.SUBSCRIBED]
    return render_template("pages/confirmed.html", topics=subscribed)


@blp.post("/confirm/resend")
@limiter.limit(page_limit)
def confirm_resend() -> tuple[str, int] | str:
    """Send a new confirmation mail for an expired link (to the address it was made for)."""
    form = forms.ResendConfirmationForm()
    if not form.validate_on_submit():
        return _invalid_link()
    confirmation.resend(form.token.data)
    db.session.commit()
    return render_template("pages/check_inbox.html", email=None)


@blp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> tuple[str, int] | str:
    """One button; a GET never changes anything (link scanners fetch it)."""
    try:
        target = read_token(token)
    except TokenInvalid:
        return _invalid_link()
    return render_template("pages/unsubscribe.html", token=token, topic_name=topic_name(target))


@blp.post("/unsubscribe/<token>")
@csrf.exempt  # RFC 8058: mail providers POST with no cookie and no CSRF token
@limiter.exempt  # see one_click_is_never_limited()
def unsubscribe_post(token: str) -> tuple[str, int] | str:
    """RFC 8058 one-click: no cookie, no CSRF token, no redirect; 200 and idempotent.

    Mail providers POST `List-Unsubscribe=One-Click` (form-encoded or multipart);
    the page's own button sends the same, plus `scope=all` for "all mail".
    """
    try:
        target = read_token(token)
    except TokenInvalid:
        return _invalid_link()
    scope, source = _what_the_post_asks()
    done = unsubscribe(target, scope, source)
    db.session.commit()
    return _unsubscribed_page(done.topic_name, done.scope)


# The body RFC 8058 prescribes, as mail providers send it (form-encoded).
_ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"


def _what_the_post_asks() -> tuple[Scope, ConsentSource]:
    """The scope and consent source of an unsubscribe POST: a mail provider's one-click
    leaves the mail's topic; the page's own button adds `from_page` and maybe `scope=all`."""
    if request.get_data() == _ONE_CLICK_BODY:
        # Nothing else in it to read: parsing it as a form cost a tenth of the request.
        return Scope.TOPIC, ConsentSource.ONE_CLICK
    form = request.form  # multipart, or the page's button (get_data() kept the body for it)
    scope = Scope.ALL if form.get("scope") == "all" else Scope.TOPIC
    source = (ConsentSource.UNSUBSCRIBE_PAGE if form.get("from_page") == "1"
              else ConsentSource.ONE_CLICK)
    return scope, source


_UNSUBSCRIBED_PAGES = "mailer.unsubscribed_pages"


def _unsubscribed_page(topic_name: str | None, scope: Scope) -> str:
    """The answer to an unsubscribe, rendered once per topic name and scope.

    It names at most the topic left, so it is the same for everyone: rendering it again
    for every one-click POST (Jinja, and Flask's and Flask-Login's context processors)
    cost a fifth of the whole request. The key holds all it shows: the brand settings and
    the script root (the stylesheet's URL) besides the topic and scope.
    """
    pages: dict[tuple[object, ...], str] = current_app.extensions.setdefault(
        _UNSUBSCRIBED_PAGES, {})
    config = current_app.config
    key = (request.script_root, config["MAILER_BRAND_NAME"], config["MAILER_BRAND_COLOR"],
           scope, topic_name)
    page = pages.get(key)
    if page is None:
        if len(pages) >= 256:  # topics are few; this only bounds what renamed topics leave
            pages.clear()
        page = pages[key] = render_template("pages/unsubscribed.html", topic_name=topic_name,
                                            scope=scope.value)
    return page


@limiter.skip_when
def one_click_is_never_limited() -> bool:
    """The one-click POST has no per-client limit, and skips Flask-Limiter altogether.

    Mail providers (Gmail, Yahoo, ...) send these POSTs for their users from a few shared
    servers: a per-client limit would make real people's unsubscribes fail exactly when a
    big campaign goes out, and "the one-click always works" is the promise of RFC 8058 and
    of the providers' sender rules. Nothing is gained by limiting it: a token is signed for
    one address, so no rate of guessing unsubscribes anyone else, and repeating a token
    changes nothing. (`@limiter.exempt` alone would still resolve the route's limits on
    every request; this skips Flask-Limiter's check before it starts.)
    """
    return request.endpoint == "pages.unsubscribe_post"


@blp.route("/unsubscribe", methods=["GET", "POST"])
@limiter.limit(page_limit, methods=["POST"])
def unsubscribe_by_address() -> Response | tuple[str, int]:
    """Type an address; a known one is mailed its preferences link. The answer never says
    whether the address is known."""
    form = forms.AddressForm()
    if form.validate_on_submit():
        answer = make_response(render_template("pages/link_sent.html", email=form.email.data))
        if not form.is_bot():
            # Looked up and mailed after the answer, so its timing says nothing either.
            after_the_answer(answer, "preference link",
                             functools.partial(send_preference_link, form.email.data))
        return answer
    status = 422 if request.method == "POST" else 200
    return render_template("pages/unsubscribe_address.html", form=form), status


@blp.route("/preferences/<token>", methods=["GET", "POST"])
def preferences_page(token: str) -> tuple[str, int] | str:
    """The preference center: topics, partner sharing, or leave everything."""
    try:
        holder = preferences.read_token(token)
    except TokenInvalid:
        return _invalid_link()
    contact = holder.contact
    if contact is None:
        return render_template("pages/preferences_empty.html")
    shown = preferences.topics_shown(contact)
    form = forms.PreferencesForm()
    form.topics.choices = [(t.slug, t.name) for t in shown]
    saved = None
    if request.method == "POST" and request.form.get("action") == "leave":
        if not forms.LeaveForm().validate_on_submit():
            return _invalid_link()
        unsubscribe(LinkTarget(holder.address_hash, None), Scope.ALL, ConsentSource.PREFERENCES)
        db.session.commit()
        return _unsubscribed_page(None, Scope.ALL)
    if form.validate_on_submit():
        outcome = preferences.apply(contact, set(form.topics.data or []),
                                    bool(form.partner_sharing.data))
        confirmation.send_confirmation(contact, outcome.needs_confirmation)
        db.session.commit()
        saved = "pending" if outcome.needs_confirmation else "saved"
    current = preferences.states(contact)
    if request.method == "GET" or saved:
        form.topics.data = [t.slug for t in shown
                            if current.get(t.id) == SubscriptionState.SUBSCRIBED]
        form.partner_sharing.data = contact.partner_sharing
    status = 422 if request.method == "POST" and not saved else 200
    return render_template("pages/preferences.html", form=form, topics=shown, states=current,
                           saved=saved, token=token), status


def register(app: Flask) -> None:
    app.register_blueprint(blp)
    from mailer.pages import tell_a_friend

    app.register_blueprint(tell_a_friend.blp)
