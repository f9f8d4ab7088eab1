"""Mails the pages send on a visitor's behalf (besides confirmations)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Response, current_app
from sqlalchemy import select

from mailer import addresses
from mailer.consent import confirmation
from mailer.consent.models import ConsentSource
from mailer.consent.services import RequestKind
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.compose import preferences_token
from mailer.messages.models import Category
from mailer.messages.services import RecipientSuppressed, SendRequest, accept

log = logging.getLogger(__name__)


def send_preference_link(email: str) -> None:
    """Mail the preferences link to a known address; do nothing for an unknown one.

    The caller answers the same either way, so the page never tells whether an
    address is known; the mail goes only to the address itself.
    """
    contact = db.session.scalar(
        select(Contact).where(Contact.address_hash == addresses.hash_of(email))
    )
    if contact is None:
        return
    base_url = current_app.config["MAILER_BASE_URL"]
    url = f"{base_url}/preferences/{preferences_token(contact.address_hash)}"
    try:
        with db.session.begin_nested():
            accept(SendRequest(to=contact.email, template="preference_link",
                               data={"preferences_url": url}, category=Category.CONFIRMATION))
    except RecipientSuppressed:
        return


def sign_up(email: str, topics: list[str], partner_sharing: bool) -> None:
    """The signup form's request: the address asks for `topics` (pending until it confirms)
    and gets the confirmation mail when one is needed; partner sharing is asked for only
    if the address does not share already, and granted only by the confirmation."""
    result = contacts.upsert(email, topics=topics, channel=ConsentSource.WEB_FORM,
                             source="signup page", kind=RequestKind.UNVERIFIED)
    wants_sharing = partner_sharing and not result.contact.partner_sharing
    confirmation.send_confirmation(result.contact, result.outcome.needs_confirmation,
                                   partner_sharing=wants_sharing)


def after_the_answer(response: Response, what: str, work: Callable[[], None]) -> Response:
    """Do `work()` once `response` has gone out to the visitor, then commit.

    For work whose cost depends on whether the address is known: done before the
    answer, the answer's timing would tell what its text does not. The WSGI server
    runs this when it closes the response, in an app context of its own; a failure
    is logged under `what` (never with the address).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def run() -> None:
        with app.app_context():
            try:
                work()
                db.session.commit()
            except Exception:
                db.session.rollback()
                log.exception("%s after the answer failed", what)

    response.call_on_close(run)
    return response
