"""Webhooks: endpoints, recording events in the transaction that causes them, signing, and
the worker's delivery (claim, POST, record).

An event becomes one `webhook_deliveries` row per endpoint that asked for its type, added to
the caller's session: it commits with the change it reports or not at all. The worker claims
due rows in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL, one conditional UPDATE on
SQLite), POSTs them with httpx and records the outcome; a row is retried with exponential
backoff until a 2xx or until RETRY_WINDOW after the event, then marked failed. Its body is
dropped once it is final (status, attempts and last error stay).

Order: events about one contact reach an endpoint in the order they happened. A row is not
claimed while an older row of the same endpoint and contact (`order_key`, the address hash)
is still pending, so a later `contact.unsubscribed` never overtakes an earlier
`contact.subscribed`, even across workers.

No event names a Tell-a-Friend recipient: referral mails record no message event, and a
mark they cause (a hard bounce, a quarantine) records no contact event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import current_app
from sqlalchemy import (
    Integer,
    String,
    Text,
    and_,
    cast,
    delete,
    exists,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import aliased

from mailer.database import UTCDateTime, utcnow
from mailer.errors import NotFound, ValidationFailed
from mailer.extensions import db
from mailer.webhooks.models import DeliveryStatus, EventType, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "Mailer-Signature"
# How long a rotated-out secret still signs, so receivers can switch without a gap.
ROTATION_OVERLAP = dt.timedelta(hours=24)
# How long an event is retried before it is marked failed.
RETRY_WINDOW = dt.timedelta(hours=24)
MAX_BACKOFF = dt.timedelta(hours=1)
REQUEST_TIMEOUT = 5.0  # seconds, per attempt: a slow receiver must not hold the worker
EVENT_TYPES = [event.value for event in EventType]


# --- endpoints -----------------------------------------------------------------------------


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _refused_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
            or ip.is_reserved or ip.is_multicast)


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def url_problem(url: str, allow_private: bool, resolve: bool = True) -> str | None:
    """Why `url` may not receive webhooks, or None.

    It must be an absolute http(s) URL with a host. Unless `allow_private`
    (MAILER_WEBHOOK_ALLOW_PRIVATE), it must be https:// and every address its host
    resolves to must be public: no loopback, private, link-local or reserved address, so a
    webhook cannot be pointed at the service's own network.
    """
    try:
        parts = urlsplit(url)
        host, port = _host_and_port(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an absolute http:// or https:// URL"
    if parts.username or parts.password:
        return "may not carry a user name or password"
    if allow_private:
        return None
    if parts.scheme != "https":
        return "must be https://"
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return "has a host name that does not resolve"
    if any(_refused_address(info[4][0]) for info in infos):
        return "resolves to a loopback, private or link-local address"
    return None


def _allow_private() -> bool:
    return bool(current_app.config.get("MAILER_WEBHOOK_ALLOW_PRIVATE", True))


def create_endpoint(url: str, events: Sequence[str]) -> tuple[WebhookEndpoint, str]:
    """Register `url` for `events`; returns the endpoint and its secret (shown once).

    Raises ValidationFailed for an unknown event or a URL refused by url_problem(). Flushes.
    """
    problem = url_problem(url, _allow_private())
    if problem:
        raise ValidationFailed("The webhook URL is refused.", fields={"url": [f"URL {problem}"]})
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        raise ValidationFailed("Unknown or no events.", fields={
            "events": [f"unknown: {', '.join(unknown)}" if unknown else "name at least one"]})
    secret = _new_secret()
    endpoint = WebhookEndpoint(public_id="whk_" + uuid.uuid4().hex, url=url,
                               events=[e for e in EVENT_TYPES if e in set(events)],
                               secret=secret)
    db.session.add(endpoint)
    db.session.flush()
    log.info("webhook endpoint created id=%s", endpoint.public_id)
    return endpoint, secret


def list_endpoints() -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def get_endpoint(public_id: str) -> WebhookEndpoint:
    """The endpoint with this id; raises NotFound."""
    endpoint = db.session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.public_id == public_id))
    if endpoint is None:
        raise NotFound(f"There is no webhook {public_id}.")
    return endpoint


def delete_endpoint(public_id: str) -> None:
    """Delete an endpoint and its undelivered events: nothing more is sent to it. Flushes."""
    endpoint = get_endpoint(public_id)
    db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    db.session.delete(endpoint)
    db.session.flush()
    log.info("webhook endpoint deleted id=%s", public_id)


def rotate_secret(public_id: str, overlap: dt.timedelta = ROTATION_OVERLAP) -> str:
    """Give the endpoint a new secret and return it (shown once); the old one also signs for
    `overlap`, so the receiver can switch without a gap. Flushes."""
    endpoint = get_endpoint(public_id)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = utcnow() + overlap
    endpoint.secret = _new_secret()
    db.session.flush()
    log.info("webhook secret rotated id=%s", public_id)
    return endpoint.secret


# How long the delivery log keeps a final row (delivered or failed).
LOG_KEPT = dt.timedelta(days=30)


def purge_finished(now: dt.datetime | None = None) -> int:
    """Forget final deliveries older than LOG_KEPT (the worker's housekeeping); flushes.
    Returns how many rows went."""
    cutoff = (now or utcnow()) - LOG_KEPT
    result = db.session.execute(delete(WebhookDelivery).where(
        WebhookDelivery.status != DeliveryStatus.PENDING.value,
        WebhookDelivery.finished_at < cutoff))
    return result.rowcount or 0


def deliveries_of(endpoint: WebhookEndpoint, limit: int = 200) -> list[WebhookDelivery]:
    """The endpoint's newest deliveries, newest first (the console's delivery log)."""
    return list(db.session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


# --- recording events (in the caller's transaction) ----------------------------------------


def _event_body(event_id: str, event_type: EventType, now: dt.datetime,
                data: dict[str, Any]) -> str:
    return json.dumps({"id": event_id, "type": event_type.value,
                       "created_at": now.isoformat().replace("+00:00", "Z"), "data": data},
                      separators=(",", ":"))


def _wants(event_type: EventType) -> Any:
    """The endpoints whose events list names `event_type` (the stored JSON as text; an event
    type holds no LIKE wildcard)."""
    return cast(WebhookEndpoint.events, String).like(f'%"{event_type.value}"%')


def record(event_type: EventType, data: dict[str, Any], order_key: str | None = None) -> None:
    """Add the event for every endpoint that asked for its type, in the caller's
    transaction: one INSERT ... SELECT, whether or not any endpoint wants it, and never for
    an endpoint deleted meanwhile. The caller's commit sends it, with the change it reports.
    """
    now = utcnow()
    event_id = "evt_" + uuid.uuid4().hex
    c = WebhookDelivery.__table__.c
    rows = select(
        WebhookEndpoint.id, literal(event_id, String), literal(event_type.value, String),
        literal(order_key, String), literal(_event_body(event_id, event_type, now, data), Text),
        literal(DeliveryStatus.PENDING.value, String), literal(0, Integer),
        literal(now, UTCDateTime), literal(now, UTCDateTime),
    ).where(_wants(event_type))
    db.session.execute(insert(WebhookDelivery.__table__).from_select(
        [c.endpoint_id, c.event_id, c.event_type, c.order_key, c.body, c.status, c.attempts,
         c.due_at, c.created_at], rows))


def record_many(event_type: EventType, events: Iterable[tuple[dict[str, Any], str | None]]
                ) -> int:
    """record() for many events of one type (a worker batch): the endpoints read once, the
    rows written in one statement. Returns how many rows."""
    endpoints = list(db.session.scalars(select(WebhookEndpoint.id).where(_wants(event_type))))
    if not endpoints:
        return 0
    now = utcnow()
    rows = []
    for data, order_key in events:
        event_id = "evt_" + uuid.uuid4().hex
        body = _event_body(event_id, event_type, now, data)
        rows.extend({"endpoint_id": endpoint_id, "event_id": event_id,
                     "event_type": event_type.value, "order_key": order_key, "body": body,
                     "status": DeliveryStatus.PENDING.value, "attempts": 0, "due_at": now,
                     "created_at": now} for endpoint_id in endpoints)
    if rows:
        db.session.execute(WebhookDelivery.__table__.insert(), rows)
    return len(rows)


def contact_subscription_changed(contact: Any, topic: Any, state: str) -> None:
    """contact.subscribed / contact.unsubscribed for a change of one subscription."""
    types = {"subscribed": EventType.CONTACT_SUBSCRIBED,
             "unsubscribed": EventType.CONTACT_UNSUBSCRIBED}
    if state not in types:
        return  # pending: nothing the calling service acts on yet
    record(types[state], {"contact_id": contact.id, "email": contact.email,
                          "topic": topic.slug}, contact.address_hash)


def address_marked(address_hash: str, reason: str) -> None:
    """contact.bounced / contact.complained when a contact's address gets that mark.

    Only for an address that is one of the calling service's contacts (its own data); an
    address the service knows nothing of, a Tell-a-Friend recipient's, is never named.
    """
    from mailer.contacts.models import Contact

    types = {"bounced": EventType.CONTACT_BOUNCED, "complained": EventType.CONTACT_COMPLAINED}
    if reason not in types:
        return
    contact = db.session.scalar(select(Contact).where(Contact.address_hash == address_hash))
    if contact is None:
        return
    record(types[reason], {"contact_id": contact.id, "email": contact.email}, address_hash)


def messages_finished(outcomes: Sequence[Any]) -> None:
    """message.sent / .failed / .suppressed for the worker's final outcomes (the delivery
    outbox's Outcome rows); none for a referral mail. Ids only."""
    from mailer.messages.models import Category, Message, MessageStatus

    types = {MessageStatus.SENT: EventType.MESSAGE_SENT,
             MessageStatus.FAILED: EventType.MESSAGE_FAILED,
             MessageStatus.SUPPRESSED: EventType.MESSAGE_SUPPRESSED}
    final = [o for o in outcomes if o.status in types and o.category is not Category.REFERRAL]
    if not final:
        return
    wanted = {t.value for t in types.values()}
    if not any(wanted & set(e.events or ()) for e in db.session.scalars(select(WebhookEndpoint))):
        return
    public_ids = dict(db.session.execute(
        select(Message.id, Message.public_id).where(Message.id.in_([o.id for o in final]))).all())
    for status, event_type in types.items():
        events = [({"message_id": public_ids[o.id], "category": o.category.value},
                   o.address_hash) for o in final if o.status is status and o.id in public_ids]
        if events:
            record_many(event_type, events)


# --- signing -------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of "<timestamp>.<body>" under `secret`."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                    hashlib.sha256).hexdigest()


def signature_header(secrets_: Sequence[str], timestamp: int, body: bytes) -> str:
    """`t=<timestamp>,v1=<sig>[,v1=<sig>]`: one v1 per secret that signs now."""
    return ",".join([f"t={timestamp}",
                     *(f"v1={signature(secret, timestamp, body)}" for secret in secrets_)])


# --- delivery (the worker) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    id: int
    event_id: str
    url: str
    body: str
    secrets: tuple[str, ...]
    attempts: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    delivered: bool
    error: str | None
    attempts: int
    created_at: dt.datetime


def claim(owner: str, limit: int, lease_seconds: float) -> list[ClaimedEvent]:
    """Take up to `limit` due events for `owner`, leased for `lease_seconds`; commits.

    A row whose endpoint has an older pending row about the same contact waits for it.
    """
    now = utcnow()
    table = WebhookDelivery.__table__
    c = table.c
    older = aliased(WebhookDelivery)
    due = (
        select(c.id)
        .where(c.status == DeliveryStatus.PENDING.value, c.due_at <= now,
               ~exists().where(older.endpoint_id == c.endpoint_id,
                               older.order_key == c.order_key, older.id < c.id,
                               older.status == DeliveryStatus.PENDING.value))
        .order_by(c.id).limit(limit)
    )
    if db.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=table)
    rows = db.session.execute(
        update(table).where(c.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, due_at=now + dt.timedelta(seconds=lease_seconds),
                attempts=c.attempts + 1)
        .returning(c.id, c.event_id, c.endpoint_id, c.body, c.attempts, c.created_at)
    ).all()
    endpoints = {e.id: e for e in db.session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.id.in_({r.endpoint_id for r in rows})))} if rows else {}
    claimed = []
    for r in rows:
        endpoint = endpoints.get(r.endpoint_id)
        if endpoint is None or r.body is None:
            continue
        signing = [endpoint.secret]
        if endpoint.previous_secret and endpoint.previous_secret_until \
                and endpoint.previous_secret_until > now:
            signing.append(endpoint.previous_secret)
        created = WebhookDelivery.created_at.type.process_result_value(r.created_at,
                                                                       db.engine.dialect)
        claimed.append(ClaimedEvent(r.id, r.event_id, endpoint.url, r.body, tuple(signing),
                                    r.attempts, created))
    db.session.commit()
    return sorted(claimed, key=lambda e: e.id)


async def _check_address(url: str, allow_private: bool) -> str | None:
    """url_problem() at delivery time, resolving on the loop (the name may point elsewhere
    now than when the endpoint was added)."""
    problem = url_problem(url, allow_private, resolve=False)
    if problem or allow_private:
        return problem
    host, port = _host_and_port(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError:
        return "host does not resolve"
    if any(_refused_address(info[4][0]) for info in infos):
        return "resolves to a loopback, private or link-local address"
    return None


async def post(client: httpx.AsyncClient, event: ClaimedEvent, allow_private: bool) -> Attempt:
    """POST one event, signed now with every secret that signs; never raises."""
    error: str | None = None
    problem = await _check_address(event.url, allow_private)
    if problem:
        error = f"refused: URL {problem}"
    else:
        body = event.body.encode()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature_header(event.secrets, int(time.time()), body),
                   "User-Agent": "mailer-webhooks"}
        try:
            response = await client.post(event.url, content=body, headers=headers,
                                         timeout=REQUEST_TIMEOUT)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
    log.info("webhook event=%s attempt=%d outcome=%s", event.event_id, event.attempts,
             "delivered" if error is None else "retry")
    return Attempt(event.id, error is None, error, event.attempts, event.created_at)


def backoff_delay(attempts: int, base_seconds: float) -> dt.timedelta:
    """Exponential backoff from `base_seconds`, capped at an hour, with ±20% jitter."""
    seconds = min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF.total_seconds())
    return dt.timedelta(seconds=seconds * random.uniform(0.8, 1.2))


def record_attempts(owner: str, attempts: Sequence[Attempt], base_backoff: float,
                    window: dt.timedelta | None = None) -> None:
    """Write each attempt's outcome to the rows `owner` still holds; commits.

    Delivered, or out of retries (`window` after the event): final, the body dropped.
    Otherwise due again after the backoff. `window` defaults to RETRY_WINDOW."""
    window = window if window is not None else RETRY_WINDOW
    now = utcnow()
    c = WebhookDelivery.__table__.c
    for attempt in attempts:
        mine = and_(c.id == attempt.id, c.lease_owner == owner,
                    c.status == DeliveryStatus.PENDING.value)
        if attempt.delivered:
            values: dict[str, Any] = {"status": DeliveryStatus.DELIVERED.value, "body": None,
                                      "due_at": None, "last_error": None, "finished_at": now}
        else:
            retry_at = now + backoff_delay(attempt.attempts, base_backoff)
            if retry_at > attempt.created_at + window:
                values = {"status": DeliveryStatus.FAILED.value, "body": None, "due_at": None,
                          "last_error": attempt.error, "finished_at": now}
            else:
                values = {"due_at": retry_at, "last_error": attempt.error}
        db.session.execute(update(WebhookDelivery.__table__).where(mine)
                           .values(lease_owner=None, **values))
    db.session.commit()
