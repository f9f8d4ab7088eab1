"""Bounces and complaints handed in as raw mail: read the report, then mark the address.

(Beside the suppressions it sets: the web API reads reports without importing delivery.)

`read_report()` understands three kinds of report:
- RFC 3464 delivery status notifications, read with the email package's own
  message/delivery-status parser. The per-recipient Status code is what tells a
  hard bounce (5.1.x, 5.2.1: the mailbox does not exist or cannot take mail) from
  a policy refusal (5.7.x) or a delay (4.x.x); flufl.bounce's DSN detector keeps
  only the addresses, so it cannot make that call.
- RFC 5965 ARF feedback reports (multipart/report; report-type=feedback-report),
  read with the email package: Feedback-Type abuse or fraud is a complaint.
- anything else that flufl.bounce's heuristic detectors recognize (Exim's
  X-Failed-Recipients, qmail, Postfix and Exchange without a DSN part, ...). Such
  a report counts as a hard bounce only when its text names a mailbox status code
  (5.1.x, 5.2.1); without one, nothing is marked, since a `bounced` mark stops
  every mail and only an operator lifts it.

A report acts only on mail the service sent: it is matched through the Message-ID of
the enclosed original (`<public_id@...>`, see messages.compose; or a Message-ID line
the report quotes), which names the outbox row of a sent mail even when no plaintext
copy of the address is left. The addresses a report names are read (and hashed) but
never used to find whom to mark: anyone can write a report naming any address, and a
report that changed something (or answered differently) for an address we once mailed
would let its sender stop mail to that address, or learn whether we ever mailed it.
A report without one of our Message-IDs changes nothing and answers `no_recipient`,
whatever address it names.

Every address a report names is hashed the moment it is read; the report and its
plaintext are never stored or logged.
"""

from __future__ import annotations

import email
import email.policy
import enum
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message as MailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses

import flufl.bounce
from sqlalchemy import select

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.errors import MailerError
from mailer.extensions import db
from mailer.messages.models import Category, Message, MessageStatus
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

log = logging.getLogger(__name__)

# RFC 3463 enhanced status code, as the DSN Status field or inside a reply text.
# Not part of a longer dotted number (an IP address, a version).
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# Our Message-ID: `<public_id@domain>`, public_id being 32 hex digits (uuid4().hex).
_OUR_MESSAGE_ID = re.compile(r"<([0-9a-f]{32})@[^<>@\s]+>", re.IGNORECASE)
# A Message-ID header line inside text (an original quoted inline by a non-DSN bounce).
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# The parts that hold the original message (or its headers) in a multipart/report.
_ORIGINAL_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
# ARF Feedback-Types that mean "the recipient does not want this mail".
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})
_POSITIVE_ACTIONS = ("delivered", "relayed", "expanded")


class UnrecognizedReport(MailerError):
    """The body is no delivery status notification, feedback report or known bounce."""

    status = 422
    code = "unrecognized_report"
    message = (
        "The body is neither a bounce (an RFC 3464 delivery status notification or another "
        "bounce format the service knows) nor an ARF feedback report (RFC 5965); nothing "
        "was changed."
    )


class NoRecipient(MailerError):
    """The report carries no Message-ID of mail this service sent."""

    status = 422
    code = "no_recipient"
    message = (
        "The report carries no Message-ID of mail this service sent (in the enclosed "
        "original or its headers); the addresses a report names are not enough. Nothing "
        "was changed."
    )


class Kind(enum.StrEnum):
    """What the report is."""

    BOUNCE = "bounce"  # a permanent delivery failure
    DELAYED = "delayed"  # a temporary failure: the sending MTA goes on trying
    DELIVERED = "delivered"  # a positive DSN (delivered, relayed, expanded)
    COMPLAINT = "complaint"  # ARF: the recipient marked the mail as spam (abuse, fraud)
    FEEDBACK = "feedback"  # ARF of another Feedback-Type (virus, not-spam, auth-failure...)


class Verdict(enum.StrEnum):
    """What the report means for the address; also the `reason` of the answer."""

    BOUNCED = "bounced"  # 5.1.x or 5.2.1: undeliverable, marked `bounced`
    COMPLAINED = "complained"  # marked `complained`
    POLICY = "policy"  # 5.7.x: refused for policy or content, the address is fine
    OTHER_FAILURE = "other_failure"  # another permanent failure (mailbox full, too large...)
    UNKNOWN_STATUS = "unknown_status"  # a failure that names no status code
    TEMPORARY = "temporary"  # delayed, or a 4.x.x status
    DELIVERED = "delivered"
    NOT_A_COMPLAINT = "not_a_complaint"


# Which finding decides when a report holds several; the first in this order wins.
_SEVERITY = (
    Verdict.COMPLAINED,
    Verdict.BOUNCED,
    Verdict.POLICY,
    Verdict.OTHER_FAILURE,
    Verdict.UNKNOWN_STATUS,
    Verdict.TEMPORARY,
    Verdict.NOT_A_COMPLAINT,
    Verdict.DELIVERED,
)
_MARKS = {
    Verdict.BOUNCED: (Reason.BOUNCED, ConsentSource.BOUNCE),
    Verdict.COMPLAINED: (Reason.COMPLAINED, ConsentSource.COMPLAINT),
}


class Action(enum.StrEnum):
    SUPPRESSED = "suppressed"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Finding:
    """What a report says about one recipient: the keyed hashes of the address it names
    (the original's To when it names none usable), never the address itself."""

    kind: Kind
    verdict: Verdict
    status: str | None
    address_hashes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Report:
    """A parsed report, holding no plaintext address."""

    format: str  # "dsn", "arf" or "heuristic"
    findings: tuple[Finding, ...]
    # The public id from the enclosed original's Message-ID, when it has the shape of ours.
    public_id: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying a report did; safe to return and log (no address)."""

    kind: Kind
    action: Action
    reason: Verdict
    status: str | None
    recipients: int  # addresses of ours the report was matched to


# --- reading --------------------------------------------------------------------------------


def read_report(raw: bytes) -> Report:
    """Parse a raw RFC 5322 message into a Report, or raise UnrecognizedReport.

    Needs an application context (addresses are hashed with the service's key)."""
    if not raw.strip():
        raise UnrecognizedReport("The body is empty: send the raw report mail.")
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    report_part = _report_part(mail)
    feedback = delivery_status = None
    if report_part is not None:
        feedback = _child_of_type(report_part, "message/feedback-report")
        delivery_status = _child_of_type(report_part, "message/delivery-status")
    if delivery_status is None:
        # A report with a wrong report-type or nesting: any delivery-status part counts.
        delivery_status = next((p for p in mail.walk()
                                if p.get_content_type() == "message/delivery-status"), None)
    original = _original_headers(report_part if report_part is not None else mail)
    fallback = _hashes(_to_addresses(original))
    if feedback is not None:
        form, findings = "arf", _arf_findings(feedback, fallback)
    elif delivery_status is not None:
        form, findings = "dsn", _dsn_findings(delivery_status, fallback)
    else:
        form, findings = "heuristic", _heuristic_findings(mail, fallback)
    if not findings:
        raise UnrecognizedReport()
    return Report(form, tuple(findings), _public_id(original, mail))


def classify_status(status: str | None) -> Verdict:
    """The verdict an RFC 3463 status code gives for a failed delivery.

    Like the worker's is_hard_bounce: only a mailbox problem (5.1.x, 5.2.1) makes an
    address undeliverable; a policy or content refusal (5.7.x) does not."""
    found = _STATUS.search(status or "")
    if found is None:
        return Verdict.UNKNOWN_STATUS
    klass, subject, detail = found.groups()
    if klass == "4":
        return Verdict.TEMPORARY
    if klass == "2":
        return Verdict.UNKNOWN_STATUS  # "failed" with a success code: contradictory
    if subject == "1" or (subject, detail) == ("2", "1"):
        return Verdict.BOUNCED
    if subject == "7":
        return Verdict.POLICY
    return Verdict.OTHER_FAILURE


def _status_code(text: str | None) -> str | None:
    found = _STATUS.search(text or "")
    return ".".join(found.groups()) if found else None


def _report_part(mail: MailMessage) -> MailMessage | None:
    """The (first) multipart/report of the mail: the mail itself, or one forwarded in it."""
    return next((p for p in mail.walk() if p.get_content_type() == "multipart/report"), None)


def _child_of_type(container: MailMessage, content_type: str) -> MailMessage | None:
    if not container.is_multipart():
        return None
    return next((p for p in container.get_payload()
                 if isinstance(p, MailMessage) and p.get_content_type() == content_type), None)


def _header_blocks(part: MailMessage) -> list[MailMessage]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, MailMessage)]
    if isinstance(payload, str) and payload.strip():
        # A part whose payload was not split into blocks: read it as one block.
        return [BytesHeaderParser().parsebytes(payload.encode("utf-8", "surrogateescape"))]
    return []


def _field(block: MailMessage, name: str) -> str:
    value = block.get(name)
    return str(value).strip() if value is not None else ""


def _fields(block: MailMessage, name: str) -> list[str]:
    return [str(value).strip() for value in block.get_all(name, [])]


def _typed_address(value: str) -> str:
    """The address of a DSN recipient field, `rfc822; a@b` (the type is optional in the wild)."""
    address_type, sep, address = value.partition(";")
    if not sep:
        address = address_type
    return address.strip().strip("<>").strip()


def _hashes(candidates: Iterable[str]) -> frozenset[str]:
    """Keyed hashes of the usable addresses among `candidates` (redacted ones are skipped)."""
    found = set()
    for candidate in candidates:
        try:
            found.add(addresses.hash_of(candidate))
        except addresses.InvalidAddress:
            continue
    return frozenset(found)


def _dsn_findings(part: MailMessage, fallback: frozenset[str]) -> list[Finding]:
    findings = []
    # The first block describes the message (Reporting-MTA...); the others, one recipient each.
    for block in _header_blocks(part):
        action = _field(block, "Action").lower()
        raw_status = _field(block, "Status")
        status = _status_code(raw_status) or _status_code(_field(block, "Diagnostic-Code"))
        if action.startswith("delayed"):
            kind, verdict = Kind.DELAYED, Verdict.TEMPORARY
        elif action.startswith(_POSITIVE_ACTIONS):
            kind, verdict = Kind.DELIVERED, Verdict.DELIVERED
        elif action.startswith(("fail", "error")):  # OpenSMTPD writes "error"
            kind, verdict = Kind.BOUNCE, classify_status(status)
        elif not action and status:  # Action is required; guess from the class if it is missing
            kind, verdict = {
                "5": (Kind.BOUNCE, classify_status(status)),
                "4": (Kind.DELAYED, Verdict.TEMPORARY),
                "2": (Kind.DELIVERED, Verdict.DELIVERED),
            }[status[0]]
        else:
            continue  # the per-message block, or an action we do not know
        # Original-Recipient is the address we wrote; Final-Recipient may be an alias's target.
        named = [_typed_address(v) for name in ("Original-Recipient", "Final-Recipient")
                 for v in _fields(block, name)]
        hashes = _hashes(address for address in named if address)
        findings.append(Finding(kind, verdict, status, hashes or fallback))
    return findings


def _arf_findings(part: MailMessage, fallback: frozenset[str]) -> list[Finding]:
    blocks = _header_blocks(part)
    if not blocks:
        return []
    block = blocks[0]
    feedback_type = _field(block, "Feedback-Type").lower()
    if not feedback_type:
        return []
    if feedback_type in COMPLAINT_TYPES:
        kind, verdict = Kind.COMPLAINT, Verdict.COMPLAINED
    else:
        kind, verdict = Kind.FEEDBACK, Verdict.NOT_A_COMPLAINT
    named = [address for name in ("Original-Rcpt-To", "Removal-Recipient")
             for value in _fields(block, name) for _, address in getaddresses([value])]
    return [Finding(kind, verdict, None, _hashes(named) or fallback)]


def _heuristic_findings(mail: MailMessage, fallback: frozenset[str]) -> list[Finding]:
    try:
        temporary, permanent = flufl.bounce.all_failures(mail)
    except Exception as exc:  # a third-party heuristic choking on odd input: not a report
        log.warning("bounce detectors failed on a report error=%s", type(exc).__name__)
        return []
    findings = []
    if permanent:
        # The detectors do not read status codes; the report's own text may name one.
        status = _status_code("\n".join(_report_texts(mail)))
        verdict = classify_status(status)
        kind = Kind.DELAYED if verdict is Verdict.TEMPORARY else Kind.BOUNCE
        hashes = _hashes(a.decode("ascii", "replace") for a in permanent)
        findings.append(Finding(kind, verdict, status, hashes or fallback))
    if temporary:
        hashes = _hashes(a.decode("ascii", "replace") for a in temporary)
        findings.append(Finding(Kind.DELAYED, Verdict.TEMPORARY, None, hashes or fallback))
    return findings


def _report_texts(mail: MailMessage) -> Iterator[str]:
    """The text/plain parts of the report itself, not those of an enclosed original."""
    stack = [mail]
    while stack:
        part = stack.pop(0)
        content_type = part.get_content_type()
        if content_type in _ORIGINAL_TYPES:
            continue
        if part.is_multipart():
            stack.extend(p for p in part.get_payload() if isinstance(p, MailMessage))
        elif content_type == "text/plain":
            yield _text_of(part)


def _text_of(part: MailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", "replace")


def _original_headers(container: MailMessage) -> MailMessage | None:
    """The headers of the original message enclosed in a report, if it has one."""
    parts = container.get_payload() if container.is_multipart() else []
    candidates = [p for p in parts if isinstance(p, MailMessage)]
    if container.get_content_type() != "multipart/report":
        # A bounce in no standard format may attach the original anywhere.
        candidates = list(container.walk())
    for part in candidates:
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], MailMessage):
                return payload[0]
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                return BytesHeaderParser().parsebytes(body)
    return None


def _to_addresses(original: MailMessage | None) -> list[str]:
    if original is None:
        return []
    return [address for _, address in getaddresses(_fields(original, "To")) if address]


def _public_id(original: MailMessage | None, mail: MailMessage) -> str | None:
    """Our public id from the original's Message-ID, or from a Message-ID line quoted in the
    report's text (bounces that copy the original inline)."""
    values = _fields(original, "Message-ID") if original is not None else []
    if not values:
        values = [m.group(1) for text in _report_texts(mail)
                  for m in _MESSAGE_ID_LINE.finditer(text)]
    for value in values:
        found = _OUR_MESSAGE_ID.search(value)
        if found:
            return found.group(1).lower()
    return None


# --- applying -------------------------------------------------------------------------------


def apply(report: Report) -> Outcome:
    """Mark the address of the sent mail a report is about, as its verdict says; raise
    NoRecipient when the report carries none of our sent mail's Message-IDs (whatever
    addresses it names). Flushes; the caller commits."""
    row_hash = category = None
    if report.public_id is not None:
        row = db.session.execute(
            select(Message.address_hash, Message.category).where(
                Message.public_id == report.public_id, Message.status == MessageStatus.SENT)
        ).first()
        if row is not None:
            row_hash, category = row
    if row_hash is None:
        raise NoRecipient()
    # The outbox row names exactly the address we mailed, however the report spells (or
    # redacts) it; every finding is about that one mail.
    verdict = min((finding.verdict for finding in report.findings), key=_SEVERITY.index)
    first = next(finding for finding in report.findings if finding.verdict is verdict)
    action = Action.NONE
    if verdict in _MARKS:
        reason, source = _MARKS[verdict]
        # A report about a Tell-a-Friend mail is announced to no webhook.
        suppressions.suppress(row_hash, reason, source=source,
                              announce=category != Category.REFERRAL)
        action = Action.SUPPRESSED
    outcome = Outcome(first.kind, action, verdict, first.status, 1)
    log.info(
        "inbound report format=%s kind=%s action=%s reason=%s status=%s message_id=%s",
        report.format, outcome.kind, outcome.action, outcome.reason, outcome.status,
        report.public_id,
    )
    return outcome
