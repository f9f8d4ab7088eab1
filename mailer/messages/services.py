"""Accepting mail into the outbox: validation, the consent gate, idempotency, status."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from mailer import addresses
from mailer.consent import gate
from mailer.consent.gate import Category, Stage
from mailer.database import utcnow
from mailer.errors import Conflict, MailerError, NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages.compose import Envelope, TopicInfo, compose, sender_address
from mailer.messages.models import IdempotencyRecord, Message, MessageStatus
from mailer.topics.models import Topic

IDEMPOTENCY_KEEP_HOURS = 48  # promised: at least 24


class RecipientSuppressed(MailerError):
    """The consent gate refuses this recipient (422 recipient_suppressed with a reason)."""

    status = 422
    code = "recipient_suppressed"

    def __init__(self, reason: str, *, message: str | None = None) -> None:
        super().__init__(
            message or f"This recipient may not receive this mail ({reason}).",
            extra={"reason": reason},
        )


@dataclass(frozen=True)
class SendRequest:
    to: str
    template: str
    data: dict[str, Any]
    category: Category
    topic: str | None = None
    # A campaign's test mail: promotional mail of the topic for the gate, with "[TEST]"
    # before the subject (see compose.Envelope.test).
    test: bool = False


def new_public_id() -> str:
    return uuid.uuid4().hex


# Statements of the accept path, built once (building and keying a statement each time cost
# about as much as running it).
_TOPIC_BY_SLUG = select(Topic).where(Topic.slug == bindparam("slug"))


def _topic(slug: str | None, category: Category) -> Topic | None:
    if category is Category.PROMOTIONAL and not slug:
        raise ValidationFailed("Promotional mail names its topic.",
                               fields={"topic": ["Required for promotional mail."]})
    if not slug:
        return None
    topic = db.session.scalar(_TOPIC_BY_SLUG, {"slug": slug})
    if topic is None:
        raise ValidationFailed(f"Unknown topic: {slug}",
                               fields={"topic": [f"Unknown topic: {slug}"]})
    return topic


def accept(request: SendRequest, *, api_key_id: int | None = None) -> Message:
    """Queue one mail, or raise: bad address, unknown template or data it lacks, missing
    settings, or a recipient the consent gate refuses. Nothing is stored on refusal."""
    try:
        to_address = addresses.normalize(request.to)
    except addresses.InvalidAddress as exc:
        raise ValidationFailed(str(exc), fields={"to": [str(exc)]}) from exc
    topic = _topic(request.topic, request.category)
    address_hash = addresses.keyed_hash(to_address)
    public_id = new_public_id()
    sender_address()
    # Render now, so an unknown template or missing data is a 422 here and never a
    # failure in the worker.
    compose(Envelope(
        public_id=public_id, to_address=to_address, address_hash=address_hash,
        category=request.category, template=request.template, data=request.data,
        topic=TopicInfo(topic.id, topic.slug, topic.name) if topic else None,
        test=request.test,
    ))
    decision = gate.check(address_hash, request.category, topic.id if topic else None,
                          stage=Stage.ACCEPT, template=request.template)
    if not decision.allowed:
        raise RecipientSuppressed(decision.reason or "refused")
    now = utcnow()
    message = Message(
        public_id=public_id, category=request.category.value,
        topic_id=topic.id if topic else None, template=request.template, data=request.data,
        to_address=to_address, address_hash=address_hash, status=MessageStatus.QUEUED.value,
        attempts=0, due_at=now, api_key_id=api_key_id, is_test=request.test, created_at=now,
        updated_at=now,
    )
    db.session.add(message)
    db.session.flush()
    return message


def get(public_id: str) -> Message:
    """A message by its public id, or NotFound."""
    message = db.session.scalar(select(Message).where(Message.public_id == public_id))
    if message is None:
        raise NotFound("No message with that id.", code="message_not_found")
    return message


def request_hash(body: Any) -> str:
    """A stable digest of a request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def idempotent(
    api_key_id: int, key: str | None, body: Any, produce: Callable[[], Answer]
) -> Answer:
    """Run `produce` once per (API key, Idempotency-Key): a repeat with the same body gets the
    first answer and changes nothing; a repeat with another body is 409. Only 2xx answers are
    kept, so a refused send can be retried once its cause is gone."""
    if key is None:
        return produce()
    if not 1 <= len(key) <= 200:
        raise ValidationFailed("Idempotency-Key is 1 to 200 characters.",
                               fields={"Idempotency-Key": ["1 to 200 characters"]})
    digest = request_hash(body)

    def replay(record: IdempotencyRecord) -> Answer:
        if record.request_hash != digest:
            raise Conflict(
                "This Idempotency-Key was used with another request body.",
                code="idempotency_key_reused",
            )
        return Answer(record.response_status, record.response_body, replayed=True)

    existing = db.session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    )
    if existing is not None:
        return replay(existing)
    answer = produce()
    if 200 <= answer.status < 300:
        try:
            with db.session.begin_nested():
                db.session.add(IdempotencyRecord(
                    api_key_id=api_key_id, key=key, request_hash=digest,
                    response_status=answer.status, response_body=answer.body,
                ))
        except IntegrityError:
            # A concurrent request with the same key won: ours must not count.
            db.session.rollback()
            winner = db.session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
                )
            )
            if winner is None:
                raise
            return replay(winner)
    return answer


def scrub_recipient(address_hash: str) -> None:
    """Remove the address and rendered data from every outbox row of the address; mail not
    yet sent is cancelled (a row a worker holds right now may still go out once)."""
    now = utcnow()
    db.session.execute(
        update(Message)
        .where(Message.address_hash == address_hash,
               Message.status.in_([MessageStatus.QUEUED, MessageStatus.DEFERRED]))
        .values(status=MessageStatus.CANCELLED, due_at=None, last_error="recipient erased",
                updated_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(Message)
        .where(Message.address_hash == address_hash)
        .values(to_address=None, data={}, last_error=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def purge_idempotency_records() -> int:
    """Delete records older than the keeping time; returns how many went."""
    cutoff = utcnow() - dt.timedelta(hours=IDEMPOTENCY_KEEP_HOURS)
    result = db.session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
    )
    return result.rowcount or 0
