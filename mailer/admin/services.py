"""What the console does beyond the domain's own services: its users, and the counts its
pages show. (Templates: messages.templates and messages.editing.)"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from mailer import addresses
from mailer.admin.models import AdminUser, Role
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentEvent, Subscription, SubscriptionState
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.errors import Conflict, ValidationFailed
from mailer.extensions import db
from mailer.messages.models import Message, MessageStatus
from mailer.suppressions.models import Reason, Suppression
from mailer.suppressions.services import suppressions_of
from mailer.topics.models import Topic

MIN_PASSWORD_LENGTH = 12
# argon2 reads every byte of a password; a bound keeps one request's work bounded.
MAX_PASSWORD_LENGTH = 1024

# argon2-cffi's defaults: argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes).
_hasher = PasswordHasher()
_dummy_hash: str | None = None


class UserExists(Conflict):
    code = "user_exists"


# -- users -------------------------------------------------------------------------------------

def check_password(password: str) -> None:
    """At least 12 characters (and at most 1024); raises ValidationFailed saying which."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.",
            fields={"password": ["too short"]},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.",
            fields={"password": ["too long"]},
        )


def create_user(email: str, password: str, role: Role | str = Role.ADMIN) -> AdminUser:
    """A console user with a normalized, unique address and a role (admin unless told);
    raises UserExists or ValidationFailed."""
    try:
        normalized = addresses.normalize(email)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"email": [str(exc)]}) from exc
    try:
        role = Role(role)
    except ValueError as exc:
        raise ValidationFailed(f"Unknown role {role!r}: admin or marketer.",
                               fields={"role": ["unknown role"]}) from exc
    check_password(password)
    taken = UserExists("A console user with that address already exists.")
    if db.session.scalar(select(AdminUser.id).where(AdminUser.email == normalized)) is not None:
        raise taken
    user = AdminUser(email=normalized, password_hash=_hasher.hash(password), role=role)
    try:
        with db.session.begin_nested():
            db.session.add(user)
    except IntegrityError as exc:  # created by someone else in the meantime
        raise taken from exc
    return user


def list_users() -> list[AdminUser]:
    """Every console user, admins first, then by address."""
    return list(db.session.scalars(select(AdminUser).order_by(AdminUser.role, AdminUser.email)))


def user_by_email(email: str) -> AdminUser | None:
    """The console user with this address (any spelling), or None."""
    try:
        normalized = addresses.normalize(email)
    except addresses.InvalidAddress:
        return None
    return db.session.scalar(select(AdminUser).where(AdminUser.email == normalized))


def end_sessions(user: AdminUser) -> None:
    """End every session of the user, in every browser, at once (server-side).

    Each session carries the user's session version in its user id; the user loader
    refuses an old one, so a copied cookie stops working with the next request.
    """
    db.session.execute(
        update(AdminUser).where(AdminUser.id == user.id)
        .values(session_version=AdminUser.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(user, ["session_version"])


def disable_user(user: AdminUser) -> None:
    """No more logins for the user, and every session of theirs ends now."""
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        db.session.flush()
    end_sessions(user)


def password_matches(user: AdminUser, password: str) -> bool:
    """Whether `password` is the user's (nothing is changed or recorded)."""
    try:
        return _hasher.verify(user.password_hash, password[:MAX_PASSWORD_LENGTH + 1])
    except (VerificationError, InvalidHashError):
        return False


def set_password(user: AdminUser, password: str) -> None:
    """A new password (checked as at creation); every session of the user ends."""
    check_password(password)
    user.password_hash = _hasher.hash(password)
    db.session.flush()
    end_sessions(user)


def _verify_dummy(password: str) -> None:
    """Spend what a real check costs, so a stranger's address answers as slowly as a user's."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("not a password: the hash of no user")
    with contextlib.suppress(VerificationError):
        _hasher.verify(_dummy_hash, password)


def authenticate(email: str, password: str) -> AdminUser | None:
    """The user whose address and password these are, else None (the same for either mistake).

    A hash made with older parameters is replaced on a successful login.
    """
    password = password[:MAX_PASSWORD_LENGTH + 1]
    try:
        normalized = addresses.normalize(email)
    except addresses.InvalidAddress:
        normalized = None
    user = None
    if normalized is not None:
        user = db.session.scalar(select(AdminUser).where(AdminUser.email == normalized))
    if user is None:
        _verify_dummy(password)
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if not user.is_active:  # disabled: the same answer as a wrong password, after the same work
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    db.session.flush()
    return user


def load_user(session_user_id: str) -> AdminUser | None:
    """Flask-Login's user loader: the session's user, or None once the session was ended
    (logout, password change, disabled user: the session version moved on) or the user
    deleted. A session from before session versions ("7") is ended too."""
    user_id, _dot, version = session_user_id.partition(".")
    try:
        user = db.session.get(AdminUser, int(user_id))
        wanted = int(version)
    except ValueError:
        return None
    if user is None or user.session_version != wanted or not user.is_active:
        return None
    return user


# -- counts ------------------------------------------------------------------------------------

@dataclass(slots=True)
class TopicCounts:
    slug: str
    name: str
    public: bool
    retired: bool = False
    double_opt_in: bool = True
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def subscribed(self) -> int:
        return self.counts.get(SubscriptionState.SUBSCRIBED, 0)

    @property
    def pending(self) -> int:
        return self.counts.get(SubscriptionState.PENDING, 0)

    @property
    def unsubscribed(self) -> int:
        return self.counts.get(SubscriptionState.UNSUBSCRIBED, 0)


def topic_counts(topic: Topic | None = None) -> list[TopicCounts]:
    """Every topic (or the one given) with its subscriptions counted by state, in one grouped
    query; retired topics last."""
    query = (
        select(Topic.slug, Topic.name, Topic.public, Topic.retired_at, Topic.double_opt_in,
               Subscription.state, func.count(Subscription.id))
        .outerjoin(Subscription, Subscription.topic_id == Topic.id)
        .group_by(Topic.id, Topic.slug, Topic.name, Topic.public, Topic.retired_at,
                  Topic.double_opt_in, Subscription.state)
        .order_by(Topic.slug)
    )
    if topic is not None:
        query = query.where(Topic.id == topic.id)
    rows = db.session.execute(query).all()
    topics: dict[str, TopicCounts] = {}
    for slug, name, public, retired_at, double_opt_in, state, count in rows:
        counted = topics.setdefault(slug, TopicCounts(slug, name, public, retired_at is not None,
                                                      double_opt_in))
        if state is not None:
            counted.counts[state] = count
    return sorted(topics.values(), key=lambda t: t.retired)


def topic_counts_of(topic: Topic) -> TopicCounts:
    """One topic's subscriptions counted by state."""
    return topic_counts(topic)[0]


FINAL_STATUSES = (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SUPPRESSED,
                  MessageStatus.CANCELLED)


def progress_of(counts: dict[str, int]) -> dict[str, int]:
    """`done` (messages with a final outcome) and the percent of the recipients it makes."""
    done = sum(counts.get(status, 0) for status in FINAL_STATUSES)
    recipients = counts.get("recipients", 0)
    percent = min(100, done * 100 // recipients) if recipients else 0
    return {"done": done, "percent": percent}


def campaign_counts(campaigns: list[Campaign]) -> dict[int, dict[str, int]]:
    """Each campaign's message counts by status (as campaigns.services.stats), in one query."""
    ids = [campaign.id for campaign in campaigns]
    result = {campaign.id: {status.value: 0 for status in MessageStatus} for campaign in campaigns}
    if ids:
        rows = db.session.execute(
            select(Message.campaign_id, Message.status, func.count())
            .where(Message.campaign_id.in_(ids))
            .group_by(Message.campaign_id, Message.status)
        ).all()
        for campaign_id, status, count in rows:
            result[campaign_id][status] = count
    for campaign in campaigns:
        counts = result[campaign.id]
        counts["recipients"] = campaign.recipients
        counts["unsubscribed"] = campaign.unsubscribed
        counts.update(progress_of(counts))
    return result


# -- suppressions ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Mark:
    reason: str
    scope: str
    topic: str | None
    created_at: dt.datetime


def describe_marks(rows: list[Suppression]) -> list[Mark]:
    """Suppression rows as the page shows them, with the topic's name instead of its id.

    A quarantine is left out: that an address received a Tell-a-Friend mail is disclosed to
    nobody (CONSENT.md), so the console shows such an address as merely not subscribed.
    """
    rows = [row for row in rows if row.reason != Reason.QUARANTINED]
    topic_ids = {row.topic_id for row in rows if row.topic_id is not None}
    names = dict(db.session.execute(
        select(Topic.id, Topic.name).where(Topic.id.in_(topic_ids))
    ).all()) if topic_ids else {}
    return [Mark(row.reason, row.scope,
                 names.get(row.topic_id) if row.topic_id is not None else None, row.created_at)
            for row in rows]


# -- contacts ---------------------------------------------------------------------------------

# Consent events the console never shows: they would tell that a referral reached the address.
HIDDEN_EVENT_STATES = frozenset({Reason.QUARANTINED.value, f"{Reason.QUARANTINED.value}_lifted"})
STATE_LABELS = {
    SubscriptionState.SUBSCRIBED: "subscribed",
    SubscriptionState.PENDING: "waiting for the address to confirm",
    SubscriptionState.UNSUBSCRIBED: "unsubscribed",
}


@dataclass(frozen=True, slots=True)
class TopicState:
    name: str
    slug: str
    state: str  # a SubscriptionState, or "not subscribed"
    label: str
    since: dt.datetime | None
    retired: bool


@dataclass(frozen=True, slots=True)
class HistoryLine:
    at: dt.datetime
    subject: str
    topic: str | None
    state: str
    source: str
    note: str | None


@dataclass(frozen=True, slots=True)
class ContactCard:
    """What the console shows about one address: never whether a referral reached it."""

    email: str
    contact: Contact | None
    topics: list[TopicState]
    marks: list[Mark]
    history: list[HistoryLine]

    @property
    def known(self) -> bool:
        return self.contact is not None or bool(self.marks) or bool(self.history)


def contact_card(raw_email: str) -> ContactCard:
    """The card of an address typed in full (ValidationFailed when it is not an address)."""
    try:
        email = addresses.normalize(raw_email)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"email": [str(exc)]}) from exc
    address_hash = addresses.keyed_hash(email)
    contact = db.session.scalar(select(Contact).where(Contact.email == email))
    rows = suppressions_of(address_hash)
    topic_marks = {row.topic_id: row for row in rows
                   if row.topic_id is not None and row.reason == Reason.UNSUBSCRIBED}
    subscriptions = {s.topic_id: s for s in contact.subscriptions} if contact else {}
    topics = []
    for topic in db.session.scalars(select(Topic).order_by(Topic.name)):
        subscription = subscriptions.get(topic.id)
        if subscription is not None:
            state, since = subscription.state, subscription.updated_at
        elif topic.id in topic_marks:
            state, since = SubscriptionState.UNSUBSCRIBED.value, topic_marks[topic.id].created_at
        elif topic.retired:
            continue
        else:
            state, since = "not subscribed", None
        topics.append(TopicState(topic.name, topic.slug, state,
                                 STATE_LABELS.get(state, "not subscribed"), since,
                                 topic.retired))
    events = db.session.scalars(select(ConsentEvent)
                                .where(ConsentEvent.address_hash == address_hash)
                                .order_by(ConsentEvent.id))
    history = [HistoryLine(event.created_at, event.subject,
                           event.topic.name if event.topic is not None else None,
                           event.state, event.source, event.note)
               for event in events if event.state not in HIDDEN_EVENT_STATES]
    return ContactCard(email, contact, topics, describe_marks(rows), history)


# -- time zones --------------------------------------------------------------------------------

@cache
def time_zone_names() -> tuple[str, ...]:
    """The IANA zone names this system knows, sorted (read once)."""
    return tuple(sorted(available_timezones()))


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(time_zone_names())


def aware(local: dt.datetime, zone_name: str) -> dt.datetime:
    """A wall-clock time in a zone as an aware datetime; a time a DST jump skips is refused.

    An hour that occurs twice (the autumn change) is taken the first time (fold=0).
    """
    if zone_name not in _known_zones():
        raise ValidationFailed(f"Unknown time zone: {zone_name}",
                               fields={"timezone": ["unknown time zone"]})
    zone = ZoneInfo(zone_name)
    moment = local.replace(tzinfo=zone)
    if moment.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != local:
        raise ValidationFailed(
            f"{local:%Y-%m-%d %H:%M} does not exist in {zone_name} (the clocks skip it).",
            fields={"send_at": ["skipped by a daylight-saving change"]},
        )
    return moment
