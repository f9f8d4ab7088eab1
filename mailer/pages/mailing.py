"""Mails the pages send on a visitor's behalf (besides confirmations)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from mailer import addresses
from mailer.consent.gate import Category
from mailer.contacts.models import Contact
from mailer.extensions import db
from mailer.messages.compose import preferences_token
from mailer.messages.services import RecipientSuppressed, SendRequest, accept


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
