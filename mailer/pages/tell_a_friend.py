"""GET|POST /tell-a-friend: recommend an item of the shop to a friend.

The shop's product page links here with `?item_name=...&item_url=...`. Whatever happens to a
valid request (queued, dropped by a limit or by the consent gate, or a bot that filled the
honeypot), the answer is the same thank-you page.
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response, current_app, make_response, render_template, request
from flask_limiter.util import get_remote_address

from mailer.errors import MailerError
from mailer.extensions import db, limiter
from mailer.pages.mailing import after_the_answer
from mailer.referrals import services as referrals
from mailer.referrals.forms import TellAFriendForm

blp = Blueprint("tell_a_friend", __name__)


def _page_limit() -> str:
    return current_app.config["MAILER_PAGE_RATE_LIMIT"]


def _thank_you() -> str:
    return render_template("pages/tell_a_friend_sent.html")


@blp.route("/tell-a-friend", methods=["GET", "POST"])
@limiter.limit(_page_limit, methods=["POST"])
def tell_a_friend() -> Response | tuple[str, int] | str:
    """The form (prefilled from the query on GET); on POST, one referral or the field errors."""
    form = TellAFriendForm()
    if request.method == "GET":
        form.item_name.data = request.args.get("item_name", "")[:referrals.MAX_ITEM_NAME]
        form.item_url.data = request.args.get("item_url", "")[:referrals.MAX_ITEM_URL]
        return render_template("pages/tell_a_friend.html", form=form)
    # CSRFProtect has already refused a POST without a valid token (400).
    if form.is_bot():
        return _thank_you()
    valid = form.validate_on_submit()
    args = (form.sender_email.data, form.sender_name.data, form.recipient_email.data,
            {referrals.ITEM_NAME: form.item_name.data, referrals.ITEM_URL: form.item_url.data},
            form.note.data or None)
    try:
        if valid:
            recommendation = referrals.prepare(*args)
        else:
            referrals.check(*args)  # to show every problem at once; stores nothing
    except MailerError as exc:
        db.session.rollback()
        if not _show_on_form(form, exc):
            raise
    else:
        if valid:
            # The limits and the gate run after the answer: the same page, in the same time,
            # whatever happens. The sender's daily cap counts this client, not the address
            # typed as the sender's (anyone can type anyone's).
            answer = make_response(_thank_you())
            return after_the_answer(answer, "referral", functools.partial(
                referrals.send_from_page, recommendation, get_remote_address()))
    return render_template("pages/tell_a_friend.html", form=form), 422


def _show_on_form(form: TellAFriendForm, error: MailerError) -> bool:
    """Put the service's field errors next to their fields (a field the form already found
    wrong keeps its own message); False when an error belongs to no field."""
    if not error.fields or any(name not in form or name == "website" for name in error.fields):
        return False
    for name, messages in error.fields.items():
        field = form[name]
        if error.code == "card_number_refused":
            messages = ["Please do not enter payment card numbers here."]
        if not field.errors:
            field.errors = list(messages)
    return True
