"""Posting a notice: every contact the consent gate's notice rule allows, each at most once per
policy version, queued set-based and logged in each one's consent history.

A notice is not a campaign: a campaign reaches one topic's subscribers, has a draft, schedule
and pause life cycle and fans out in leased batches; a notice reaches every contact subscribed
to any topic, goes out at once, and its at-most-once key spans every posting of a policy
version, which no single campaign row could hold. So it has two small tables of its own
(notices.models) and three INSERT ... SELECT statements, run in the caller's transaction:

1. `notice_deliveries` gets a row per allowed address (`gate.notice_allowed`, the gate's own
   rule in SQL), ON CONFLICT (policy_version, address_hash) DO NOTHING: an address a posting of
   the version reached before (or reaches concurrently) gets no row, and so no mail;
2. the outbox gets a `notice` mail for each row this notice won;
3. `consent_events` gets a `notice` event (state `notified`, note the policy version) for each,
   which the contact's export shows.

The worker delivers them like any mail: the gate checked again just before SMTP, at the shared
`MAILER_MAX_RATE`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from mailer import addresses
from mailer.campaigns.fanout import public_ids
from mailer.consent import gate
from mailer.consent.models import ConsentEvent, ConsentSource, ConsentSubject
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.errors import NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.compose import Envelope, compose
from mailer.messages.models import Category, Message, MessageStatus, TemplateCategory
from mailer.messages.services import new_public_id
from mailer.messages.templates import CategoryMismatch, TemplateInfo
from mailer.notices.models import Notice, NoticeDelivery

NOTIFIED = "notified"  # the state of a notice's consent event
POLICY_VERSION_LENGTH = 100

_contacts = Contact.__table__.c
_deliveries = NoticeDelivery.__table__.c


def notice_template(name: str) -> TemplateInfo:
    """The template a notice may send: a notice one (422 category_mismatch else)."""
    info = templates.lookup(name, variables=False)
    if info.category is not TemplateCategory.NOTICE or info.service is not None:
        raise CategoryMismatch(
            f"Notices send notice templates only; '{info.name}' is {info.category.value}.",
            fields={"template": [f"{info.name} is {info.category.value}, not notice"]},
            extra={"template_category": info.category.value},
        )
    return info


def _check_policy_version(policy_version: Any) -> str:
    if (not isinstance(policy_version, str) or not policy_version.strip()
            or len(policy_version) > POLICY_VERSION_LENGTH):
        raise ValidationFailed(
            "policy_version is a text of 1 to 100 characters.",
            fields={"policy_version": ["a text of 1 to 100 characters"]})
    return policy_version.strip()


def count_recipients() -> int:
    """How many contacts the gate's notice rule allows now (before the versions they have)."""
    return db.session.scalar(
        select(func.count()).select_from(Contact)
        .where(gate.notice_allowed(Contact.address_hash))) or 0


def post(template: str, data: dict[str, Any], policy_version: str, *,
         source: ConsentSource, created_by: str | None = None) -> Notice:
    """Queue the notice to every contact the gate's notice rule allows that no posting of
    `policy_version` reached before; the template must be a notice one and render with the
    data (422 otherwise). Flushes; the caller commits, so deliveries, mail and consent events
    are stored together or not at all."""
    policy_version = _check_policy_version(policy_version)
    reference = notice_template(template).reference
    sample = "sample@example.com"
    compose(Envelope(public_id=new_public_id(), to_address=sample,
                     address_hash=addresses.keyed_hash(sample), category=Category.NOTICE,
                     template=reference, data=data))
    notice = Notice(public_id=new_public_id(), template=reference, data=data,
                    policy_version=policy_version, recipients=0, created_by=created_by)
    db.session.add(notice)
    db.session.flush()
    now = utcnow()
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    claimed = db.session.execute(
        dialect.insert(NoticeDelivery.__table__)
        .from_select(
            ["policy_version", "address_hash", "notice_id", "created_at"],
            select(literal(policy_version, String), _contacts.address_hash,
                   literal(notice.id, Integer), literal(now, NoticeDelivery.created_at.type))
            .where(gate.notice_allowed(_contacts.address_hash)))
        .on_conflict_do_nothing(index_elements=["policy_version", "address_hash"])
        .execution_options(preserve_rowcount=True)
    ).rowcount
    won = (select(Contact).join(NoticeDelivery, NoticeDelivery.address_hash == Contact.address_hash)
           .where(NoticeDelivery.notice_id == notice.id))
    if claimed:
        db.session.execute(
            insert(Message.__table__).from_select(
                ["public_id", "category", "topic_id", "template", "data", "to_address",
                 "address_hash", "status", "attempts", "due_at", "campaign_id", "notice_id",
                 "created_at", "updated_at", "is_test"],
                won.with_only_columns(
                    public_ids(now, claimed),
                    literal(Category.NOTICE.value), null(), literal(reference),
                    bindparam("notice_data", data, type_=Message.data.type),
                    Contact.email, Contact.address_hash, literal(MessageStatus.QUEUED.value),
                    literal(0, Integer), literal(now, Message.due_at.type), null(),
                    literal(notice.id, Integer), literal(now, Message.created_at.type),
                    literal(now, Message.updated_at.type), literal(False, Boolean),
                ).order_by(Contact.address_hash)))
        db.session.execute(
            insert(ConsentEvent.__table__).from_select(
                ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "note",
                 "created_at"],
                won.with_only_columns(
                    Contact.id, Contact.address_hash, literal(ConsentSubject.NOTICE.value),
                    null(), literal(NOTIFIED), literal(source.value),
                    literal(policy_version, String), literal(now, ConsentEvent.created_at.type),
                )))
    notice.recipients = claimed
    db.session.flush()
    return notice


def get(public_id: str) -> Notice:
    notice = db.session.scalar(select(Notice).where(Notice.public_id == public_id))
    if notice is None:
        raise NotFound("No notice with that id.", code="notice_not_found")
    return notice


def list_notices(limit: int = 100) -> list[Notice]:
    """The latest notices, newest first."""
    return list(db.session.scalars(select(Notice).order_by(Notice.id.desc()).limit(limit)))


def stats(notice: Notice) -> dict[str, int]:
    """Counts only, as a campaign's: recipients, and how many of its mails in each status."""
    rows = db.session.execute(
        select(Message.status, func.count()).where(Message.notice_id == notice.id)
        .group_by(Message.status)).all()
    counts = {status.value: 0 for status in MessageStatus}
    counts.update({status: count for status, count in rows})
    counts["recipients"] = notice.recipients
    return counts
