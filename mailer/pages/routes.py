"""Public pages (server-rendered HTML): signup, confirm, unsubscribe, preferences."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template, request

from mailer.consent import confirmation, preferences
from mailer.consent.models import ConsentSource, SubscriptionState
from mailer.consent.services import RequestKind
from mailer.consent.unsubscribe import LinkTarget, Scope, read_token, unsubscribe
from mailer.contacts import services as contacts
from mailer.extensions import commit_and_keep, csrf, db, limiter
from mailer.pages import forms
from mailer.pages.mailing import send_preference_link
from mailer.tokens import TokenExpired, TokenInvalid
from mailer.topics.services import list_topics

blp = Blueprint("pages", __name__)


def page_limit() -> str:
    return current_app.config["MAILER_PAGE_RATE_LIMIT"]


def _invalid_link() -> tuple[str, int]:
    return render_template("pages/invalid_link.html"), 400


@blp.route("/subscribe", methods=["GET", "POST"])
@limiter.limit(page_limit, methods=["POST"])
def subscribe() -> tuple[str, int] | str:
    """Sign up for public topics; the answer is the same for new, pending and subscribed."""
    topics = list_topics(public_only=True)
    form = forms.SubscribeForm()
    form.topics.choices = [(t.slug, t.name) for t in topics]
    if request.method == "GET" and len(topics) == 1:
        form.topics.data = [topics[0].slug]
    if form.validate_on_submit():
        if not form.is_bot():
            result = contacts.upsert(
                form.email.data, topics=form.topics.data, channel=ConsentSource.WEB_FORM,
                source="signup page", kind=RequestKind.UNVERIFIED,
            )
            wants_sharing = bool(form.partner_sharing.data) and not result.contact.partner_sharing
            confirmation.send_confirmation(result.contact, result.outcome.needs_confirmation,
                                           partner_sharing=wants_sharing)
            db.session.commit()
        return render_template("pages/check_inbox.html", email=form.email.data)
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
    return render_template("pages/unsubscribe.html", token=token, target=target)


@blp.post("/unsubscribe/<token>")
@csrf.exempt  # RFC 8058: mail providers POST with no cookie and no CSRF token
def unsubscribe_post(token: str) -> tuple[str, int] | str:
    """RFC 8058 one-click: no cookie, no CSRF token, no redirect; 200 and idempotent.

    Mail providers POST `List-Unsubscribe=One-Click` (form-encoded or multipart);
    the page's own button sends the same, plus `scope=all` for "all mail".
    """
    try:
        target = read_token(token)
    except TokenInvalid:
        return _invalid_link()
    scope = Scope.ALL if request.form.get("scope") == "all" else Scope.TOPIC
    from_page = request.form.get("from_page") == "1"
    unsubscribe(target, scope, ConsentSource.UNSUBSCRIBE_PAGE if from_page
                else ConsentSource.ONE_CLICK)
    # The page names the topic: keep it loaded rather than read it again after the commit.
    commit_and_keep()
    return render_template("pages/unsubscribed.html", target=target, scope=scope.value)


@blp.route("/unsubscribe", methods=["GET", "POST"])
@limiter.limit(page_limit, methods=["POST"])
def unsubscribe_by_address() -> tuple[str, int] | str:
    """Type an address; a known one is mailed its preferences link. The answer never says
    whether the address is known."""
    form = forms.AddressForm()
    if form.validate_on_submit():
        if not form.is_bot():
            send_preference_link(form.email.data)
            db.session.commit()
        return render_template("pages/link_sent.html", email=form.email.data)
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
        unsubscribe(LinkTarget(holder.address_hash, None, contact), Scope.ALL,
                    ConsentSource.PREFERENCES)
        db.session.commit()
        return render_template("pages/unsubscribed.html", target=None, scope="all")
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
