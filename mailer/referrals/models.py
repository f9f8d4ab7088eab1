"""Referral sends, known only by keyed hashes: what the per-sender and per-friend limits read."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from mailer.database import UTCDateTime, utcnow
from mailer.extensions import db


class Referral(db.Model):
    """One referral mail that was queued: who sent it to whom, as keyed hashes (`sender_hash`:
    of what the sender's daily cap counts, the calling API key with the sender's address; see
    referrals.services.api_sender_key).

    No plaintext address is kept here (the friend's exists only in the outbox row until its
    mail is final; the sender's never). A row is needed for 30 days at most.
    """

    __tablename__ = "referrals"
    __table_args__ = (
        # The sender's daily cap: rows of one sender in the last 24 hours.
        Index("ix_referrals_sender_hash_created_at", "sender_hash", "created_at"),
        # One referral per friend per 30 days.
        Index("ix_referrals_friend_hash_created_at", "friend_hash", "created_at"),
        # Purging rows older than the longest limit.
        Index("ix_referrals_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sender_hash: Mapped[str] = mapped_column(String(64))
    friend_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
