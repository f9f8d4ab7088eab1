"""Tell-a-Friend: check a recommendation, apply the limits, queue its mail, quarantine the friend.

The privacy promise (../shared/CONTRACT.md, ../shared/CONSENT.md): the friend gets that one
mail and is never marketed to unless the address itself later confirms a subscription by
double opt-in. The friend's plaintext address lives only in the outbox row of that mail, which
the worker scrubs once the mail is final; the sender's address is never stored, only its keyed
hash in `referrals` rows, which the limits read.

Every refusal by a limit or by the consent gate is silent, and happens after the answer: the API
and the page answer once `prepare()` has checked the input (the same work for every friend),
and `send()` applies the limits and the gate after the answer has gone out, so neither the
answer nor its timing tells anything about an address.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from limits import RateLimitItemPerDay
from sqlalchemy import delete, func, select, text

from mailer import addresses
from mailer.card_numbers import text_holds_card_number
from mailer.consent.gate import REFERRAL_INTERVAL
from mailer.consent.models import ConsentSource, Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.errors import CardNumberRefused, ValidationFailed
from mailer.extensions import db, limiter
from mailer.messages.compose import postal_address, sender_address
from mailer.messages.models import Category
from mailer.messages.services import RecipientSuppressed, SendRequest, accept
from mailer.referrals.models import Referral
from mailer.referrals.top_level_domains import TOP_LEVEL_DOMAINS
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason, Suppression

log = logging.getLogger(__name__)

TEMPLATE = "referral"
# Said in the mail when the sender gives no name. The local part of the sender's address
# would be a guess at a name that also discloses part of an address nobody agreed to show.
DEFAULT_SENDER_NAME = "A friend"
MAX_SENDER_NAME = 100
MAX_ITEM_NAME = 200
MAX_ITEM_URL = 2000
MAX_NOTE = 500
FRIEND_INTERVAL = REFERRAL_INTERVAL  # one referral mail per friend per 30 days
SENDER_WINDOW = dt.timedelta(hours=24)  # the daily cap is over a rolling 24 hours
KEEP = max(FRIEND_INTERVAL, SENDER_WINDOW)  # rows older than this serve no limit

# The field names of errors, as the API names them (the page uses the same names).
SENDER_EMAIL, SENDER_NAME, RECIPIENT_EMAIL = "sender_email", "sender_name", "recipient_email"
ITEM_NAME, ITEM_URL, NOTE = "item_name", "item_url", "note"

# A link in any free text (name, item name, note) would make the form a relay for arbitrary
# links: the text goes into the Subject and both parts, and mail clients turn text like this
# into links even in the plain-text part. Refused: anything with a scheme (`http://`,
# `hxxp://`, `mailto:`, ...), `www.`, a host name followed by a path (`evil.example/win`), a
# bare host name under any top-level domain of the DNS root (`evil.com`, `evil.page`,
# `x.vip`, `xn--...`), and an address. The text is read as a mail client (or a person
# retyping it) would: full-width and ideographic dots count as dots (IDNA maps them so),
# invisible characters are dropped, and the defanged `evil[.]page`, `evil(dot)page` and
# `hxxp` count as what they spell. A word with a dot whose last part is no top-level domain
# (`Node.js`, `e.g.`, `2.5`) is ordinary text; so is "evil dot com", which no client links.
_LINK_IN_TEXT = re.compile(
    r"\b(?:[a-z][a-z0-9+.-]*://|www\.|(?:mailto|javascript|data|tel|sms|hxxps?):(?=\S)"
    r"|hxxps?\b"
    # Each label ends at its dot, so the search stays linear in the text's length.
    r"|(?:[\w-]+\.)+[^\W\d_]{2,63}/)"
    # An address (`x@evil.example`) counts too: clients make it a mailto: link.
    r"|[^\s@]@(?:[\w-]+\.)+[^\W\d_]{2,63}"
)
# A run of host-name characters: labels and dots, read whole and split (no backtracking).
_HOST_LIKE = re.compile(r"[\w.-]+")
# Dots that IDNA maps to a full stop (the full-width one is already one after NFKC).
_DOTS = str.maketrans({"\u3002": ".", "\uff61": ".", "\uff0e": "."})
# `[.]`, `(.)`, `{.}`, `[dot]`, `(dot)`: a dot written so that no client links it, until a
# person retypes it; `[:]` likewise for the colon of a scheme.
_DEFANGED_DOT = re.compile(r"\s*[\[({]\s*(?:\.|dot)\s*[\])}]\s*", re.IGNORECASE)
_DEFANGED_COLON = re.compile(r"[\[({]:[\])}]")


def _as_a_client_reads(text_value: str) -> str:
    """The text with look-alike dots, invisible characters and defanging undone, lower-case."""
    text_value = unicodedata.normalize("NFKC", text_value).translate(_DOTS)
    text_value = "".join(c for c in text_value if unicodedata.category(c) != "Cf")
    text_value = _DEFANGED_COLON.sub(":", _DEFANGED_DOT.sub(".", text_value))
    return text_value.lower()


def _names_a_host(token: str) -> bool:
    """True when `token` (letters, digits, `_`, `-` and dots) is a host name under a
    top-level domain of the DNS root: `evil.page`, `shop.example.co.uk.`."""
    labels = token.strip(".-").split(".")
    if len(labels) < 2 or not all(labels):
        return False
    last = labels[-1]
    return last in TOP_LEVEL_DOMAINS or last.startswith("xn--")


# PostgreSQL advisory lock namespaces ("REF1", "REF2"): one sender, one friend at a time.
_SENDER_LOCK, _FRIEND_LOCK = 0x52454631, 0x52454632


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A checked referral: normalized addresses and the text the mail shows."""

    sender_email: str
    sender_name: str
    friend_email: str
    item_name: str
    item_url: str
    note: str

    def mail_data(self) -> dict[str, Any]:
        """The variables of the `referral` template (nothing else is stored with the mail)."""
        return {"sender_name": self.sender_name, "item_name": self.item_name,
                "item_url": self.item_url, "note": self.note}


def shop_origin() -> str:
    """Where recommended items must live: MAILER_SHOP_URL, else MAILER_BASE_URL."""
    config = current_app.config
    return (config.get("MAILER_SHOP_URL") or config["MAILER_BASE_URL"]).rstrip("/")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def is_shop_url(url: str) -> bool:
    """True when `url` is an http(s) link on the shop's origin (and under its path, if any).

    Scheme, host and port are compared after parsing, so `https://shop.example.evil.org/` or
    `https://shop.example@evil.org/` are not mistaken for the shop.
    """
    if not url or not url.isprintable() or any(c.isspace() for c in url) or "\\" in url:
        return False
    shop = urlsplit(shop_origin())
    try:
        target = urlsplit(url)
        target_port = target.port or _default_port(target.scheme.lower())
        shop_port = shop.port or _default_port(shop.scheme.lower())
    except ValueError:
        return False
    scheme = target.scheme.lower()
    if scheme not in ("http", "https") or scheme != shop.scheme.lower():
        return False
    if target.username is not None or target.password is not None:
        return False
    if not target.hostname or target.hostname != shop.hostname or target_port != shop_port:
        return False
    prefix = shop.path.rstrip("/")
    return not prefix or target.path == prefix or target.path.startswith(prefix + "/")


def holds_link(text_value: str) -> bool:
    """True when mail clients could turn part of `text_value` into a link, or a person could
    by retyping it (see _LINK_IN_TEXT)."""
    read = _as_a_client_reads(text_value)
    if _LINK_IN_TEXT.search(read) is not None:
        return True
    return any(_names_a_host(token.group()) for token in _HOST_LIKE.finditer(read))


def _no_links(label: str) -> str:
    return f"Links cannot be sent in {label}; the item's link is in the mail."


def _one_line(value: str | None, field: str, label: str, maximum: int,
              errors: dict[str, list[str]]) -> str:
    """Trimmed one-line text of 1..maximum printable characters without links (it goes into
    the Subject header and both parts of the mail)."""
    text_value = (value or "").strip()
    if not text_value:
        errors[field] = [f"Enter {label}."]
    elif len(text_value) > maximum:
        errors[field] = [f"At most {maximum} characters."]
    elif not text_value.isprintable():
        errors[field] = ["Use one line of plain text (no line breaks or control characters)."]
    elif holds_link(text_value):
        errors[field] = [_no_links(label)]
    return text_value


def check(sender_email: str, sender_name: str | None, friend_email: str,
          item: dict[str, Any], note: str | None) -> Recommendation:
    """Check and normalize a referral, or raise: CardNumberRefused when any field holds a card
    number, else ValidationFailed naming every bad field."""
    item = item if isinstance(item, dict) else {}
    raw = {SENDER_EMAIL: sender_email, SENDER_NAME: sender_name, RECIPIENT_EMAIL: friend_email,
           ITEM_NAME: item.get(ITEM_NAME), ITEM_URL: item.get(ITEM_URL), NOTE: note}
    cards = {field: ["Card numbers are never stored; remove it."]
             for field, value in raw.items()
             if isinstance(value, str) and text_holds_card_number(value)}
    if cards:
        raise CardNumberRefused(fields=cards)
    for field, value in raw.items():
        if value is not None and not isinstance(value, str):
            raise ValidationFailed(fields={field: ["Must be text."]})

    errors: dict[str, list[str]] = {}
    normalized: dict[str, str] = {}
    for field in (SENDER_EMAIL, RECIPIENT_EMAIL):
        try:
            normalized[field] = addresses.normalize(raw[field] or "")
        except addresses.InvalidAddress as exc:
            errors[field] = [str(exc)]
    if (RECIPIENT_EMAIL in normalized
            and normalized.get(SENDER_EMAIL) == normalized[RECIPIENT_EMAIL]):
        errors[RECIPIENT_EMAIL] = ["This is your own address: enter your friend's address."]

    name = DEFAULT_SENDER_NAME if raw[SENDER_NAME] is None else raw[SENDER_NAME]
    name = _one_line(name, SENDER_NAME, "your name", MAX_SENDER_NAME, errors)
    item_name = _one_line(raw[ITEM_NAME], ITEM_NAME, "the item's name", MAX_ITEM_NAME, errors)
    item_url = (raw[ITEM_URL] or "").strip()
    if not item_url:
        errors[ITEM_URL] = ["Enter the item's link."]
    elif len(item_url) > MAX_ITEM_URL:
        errors[ITEM_URL] = [f"At most {MAX_ITEM_URL} characters."]
    elif not is_shop_url(item_url):
        errors[ITEM_URL] = [f"Only links to our shop can be recommended ({shop_origin()}/...)."]

    note_text = (raw[NOTE] or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(note_text) > MAX_NOTE:
        errors[NOTE] = [f"At most {MAX_NOTE} characters."]
    elif not all(c.isprintable() or c in "\n\t" for c in note_text):
        errors[NOTE] = ["Use plain text (no control characters)."]
    elif holds_link(note_text):
        errors[NOTE] = [_no_links("the note")]

    if errors:
        raise ValidationFailed(fields=errors)
    return Recommendation(sender_email=normalized[SENDER_EMAIL], sender_name=name,
                          friend_email=normalized[RECIPIENT_EMAIL], item_name=item_name,
                          item_url=item_url, note=note_text)


def _lock_int(address_hash: str) -> int:
    """A 32-bit signed key from a hex hash, for pg_advisory_xact_lock(int, int)."""
    return int(address_hash[:8], 16) - 2**31


def _serialize(sender_hash: str, friend_hash: str) -> None:
    """Hold off concurrent referrals of this sender and to this friend until commit, so two
    requests at once cannot both pass the limits.

    PostgreSQL: transaction-scoped advisory locks, the sender's first (the namespaces differ,
    so two requests never wait for each other in a cycle). SQLite: a write that changes nothing
    takes the database's one write lock now, before the limits are read.
    """
    if db.engine.dialect.name == "postgresql":
        for namespace, address_hash in ((_SENDER_LOCK, sender_hash), (_FRIEND_LOCK, friend_hash)):
            db.session.execute(text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
                               {"namespace": namespace, "key": _lock_int(address_hash)})
    else:
        db.session.execute(text("UPDATE referrals SET id = id WHERE 0 = 1"))


def _drop_reason(sender_hash: str | None, friend_hash: str, now: dt.datetime) -> str | None:
    """Which limit, if any, drops this referral (`sender_hash` None: no sender cap here)."""
    cap = int(current_app.config.get("MAILER_REFERRAL_DAILY_CAP", 5))
    if sender_hash is not None and db.session.scalar(
        select(func.count()).select_from(Referral).where(
            Referral.sender_hash == sender_hash, Referral.created_at > now - SENDER_WINDOW)
    ) >= cap:
        return "sender_daily_cap"
    recent_to_friend = db.session.scalar(
        select(Referral.id).where(
            Referral.friend_hash == friend_hash, Referral.created_at > now - FRIEND_INTERVAL
        ).limit(1)
    )
    if recent_to_friend is not None:
        return "friend_interval"
    return None


def _quarantine(friend_hash: str, now: dt.datetime) -> None:
    """Mark the friend `quarantined` as of now (refreshing an older mark), unless the address
    is subscribed to a topic: that consent was the address's own, and a quarantine would cut it.
    """
    mark = db.session.scalar(
        select(Suppression).where(Suppression.address_hash == friend_hash,
                                  Suppression.reason == Reason.QUARANTINED,
                                  Suppression.topic_id.is_(None))
    )
    if mark is None:
        contact = db.session.scalar(select(Contact).where(Contact.address_hash == friend_hash))
        if contact is not None and db.session.scalar(
            select(Subscription.id).where(Subscription.contact_id == contact.id,
                                          Subscription.state == SubscriptionState.SUBSCRIBED)
            .limit(1)
        ) is not None:
            return
        mark = suppressions.suppress(friend_hash, Reason.QUARANTINED,
                                     source=ConsentSource.REFERRAL,
                                     contact_id=contact.id if contact else None)
    # The gate reads the time of the last referral from the mark.
    mark.created_at = now


def prepare(sender_email: str, sender_name: str | None, friend_email: str,
            item: dict[str, Any], note: str | None) -> Recommendation:
    """What the answer to a referral may depend on: the input and the settings, the same for
    every friend. Raises CardNumberRefused, ValidationFailed or NotConfigured."""
    recommendation = check(sender_email, sender_name, friend_email, item, note)
    # Settings too: whether they are missing must not depend on what happens to the referral.
    sender_address()
    postal_address()
    return recommendation


def api_sender_key(api_key_id: int, sender_email: str) -> str:
    """What the per-sender daily cap counts for a calling service: its API key and the sender
    it names (normalized). The address alone is anyone's to type: keyed on it, a stranger
    could use up someone else's cap, or dodge the cap with a new address each time; a
    calling service answers for the senders it names, and a key is revoked if it lies."""
    return f"api-key:{api_key_id}:{sender_email}"


PAGE_SENDER_KEY = "tell-a-friend page"  # the page's rows; its cap is per client, see below


def page_cap_allows(client: str) -> bool:
    """Count one referral of the Tell-a-Friend page's `client` (its address as the limiter sees
    it, MAILER_TRUSTED_PROXIES applied) against MAILER_REFERRAL_DAILY_CAP a day; False when
    over it. Counted in the rate limiter's storage (memory or Redis, with an expiry), never
    in the database: no client address is stored next to a referral (CONSENT.md)."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return True  # MAILER_RATELIMIT_ENABLED=0 turns off every per-client limit (test rigs)
    cap = int(current_app.config.get("MAILER_REFERRAL_DAILY_CAP", 5))
    return limiter.limiter.hit(RateLimitItemPerDay(cap), "referral-page", client)


def send_from_page(recommendation: Recommendation, client: str) -> None:
    """send() for the Tell-a-Friend page: the sender's daily cap counts the page's client
    (page_cap_allows), since the sender address typed there is anyone's to type."""
    if not page_cap_allows(client):
        log.info("referral dropped reason=client_daily_cap")
        return
    send(recommendation, None)


def send(recommendation: Recommendation, sender_key: str | None) -> None:
    """Queue the one referral mail to a friend, or drop it silently; flushes, never commits.

    Run after the answer has gone out (mailer.pages.mailing.after_the_answer), so that neither
    what happens nor how long it takes tells the sender anything about the friend. Dropped
    without a word: over the sender's daily cap (MAILER_REFERRAL_DAILY_CAP per rolling 24 h of
    `sender_key`, see api_sender_key; None when the caller counted its own cap, as the page
    does per client), a referral to the same friend in the last 30 days, and whatever the
    consent gate refuses (bounced, complained, left, erased, blocked, quarantined within 30
    days). A queued referral creates no contact; it records a hash-only `referrals` row and
    quarantines the friend (see _quarantine).
    """
    sender_hash = addresses.keyed_hash(sender_key or PAGE_SENDER_KEY)
    friend_hash = addresses.keyed_hash(recommendation.friend_email)
    _serialize(sender_hash, friend_hash)
    now = utcnow()
    reason = _drop_reason(sender_hash if sender_key is not None else None, friend_hash, now)
    if reason is None:
        try:
            with db.session.begin_nested():
                message = accept(SendRequest(to=recommendation.friend_email, template=TEMPLATE,
                                             data=recommendation.mail_data(),
                                             category=Category.REFERRAL))
        except RecipientSuppressed as exc:
            reason = f"gate:{exc.extra.get('reason')}"
    if reason is not None:
        log.info("referral dropped reason=%s", reason)
        return
    _quarantine(friend_hash, now)
    db.session.add(Referral(sender_hash=sender_hash, friend_hash=friend_hash, created_at=now))
    db.session.flush()
    log.info("referral queued message_id=%s", message.public_id)


def refer(sender_email: str, sender_name: str | None, friend_email: str, item: dict[str, Any],
          note: str | None, *, api_key_id: int = 0) -> None:
    """prepare() and send() at once, the cap counted per `api_key_id` and sender (for the
    services' own tests and scripts; the API and the page answer between the two)."""
    recommendation = prepare(sender_email, sender_name, friend_email, item, note)
    send(recommendation, api_sender_key(api_key_id, recommendation.sender_email))


def purge_expired(now: dt.datetime | None = None) -> int:
    """Delete `referrals` rows no limit reads any more (older than 30 days); returns how many."""
    cutoff = (now or utcnow()) - KEEP
    result = db.session.execute(delete(Referral).where(Referral.created_at < cutoff))
    return result.rowcount or 0
