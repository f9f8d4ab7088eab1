"""Who may receive a campaign's test mail: the console users and MAILER_TEST_RECIPIENTS.

A test mail is the campaign's promotional mail marked "[TEST]". Sent to a subscriber of the
topic it passes the consent gate as any promotional mail. Sent to a test recipient it passes
as a test: the people who write the shop's mail checking it, by their own choice (a console
user's address, or one the operator listed). The gate still refuses a test to a marked
address (bounced, complained, left, erased, blocked) or one that left the topic, and at
delivery it looks again, as for every mail. Nobody else can be sent a test: not a typed
address, so a test form is never a way to market to anyone.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from mailer import addresses
from mailer.admin.models import AdminUser
from mailer.extensions import db


def test_recipients() -> list[str]:
    """The addresses a test mail may go to, normalized: console users' own, then the
    configured list; no duplicates."""
    found = list(db.session.scalars(select(AdminUser.email)
                                    .where(AdminUser.disabled_at.is_(None))
                                    .order_by(AdminUser.email)))
    for configured in current_app.config.get("MAILER_TEST_RECIPIENTS") or []:
        try:
            found.append(addresses.normalize(configured))
        except addresses.InvalidAddress:
            continue  # checked when the settings were read; nothing to match here
    return list(dict.fromkeys(found))


def test_recipient_hashes() -> set[str]:
    """The keyed hashes of test_recipients() (what the outbox and the gate know)."""
    return {addresses.keyed_hash(address) for address in test_recipients()}
