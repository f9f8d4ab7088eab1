"""mailer.suppressions.reports: reading bounce and complaint reports, and what applying one does."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.messages import services as messages
from mailer.messages.compose import Envelope, compose
from mailer.messages.models import Category, MessageStatus
from mailer.messages.services import SendRequest
from mailer.suppressions import reports as bounces
from mailer.suppressions.models import Reason, Suppression
from mailer.suppressions.reports import Kind, Verdict
from mailer.suppressions.services import marks

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inbound"
# The public id in every fixture's enclosed Message-ID; tests put a real one in its place.
FIXTURE_ID = "5f1d7c0e9a8b4c3d2e1f0a9b8c7d6e5f"
RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Guitar", "price": "€399"}],
           "total": "€399"}


def fixture(name: str, public_id: str | None = None) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(FIXTURE_ID.encode(), public_id.encode()) if public_id else raw


def mailed(address: str, *, sent: bool = True) -> str:
    """Queue a receipt to `address` and return its public id; `sent` marks the outbox row as
    the worker leaves it once SMTP took the mail (tests/api/test_inbound.py delivers for
    real)."""
    message = messages.accept(SendRequest(to=address, template="receipt", data=RECEIPT,
                                          category=Category.TRANSACTIONAL))
    if sent:
        message.status = MessageStatus.SENT
    db.session.commit()
    return message.public_id


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "form", "kind", "verdict", "status", "address"),
    [
        ("dsn_postfix_5_1_1.eml", "dsn", Kind.BOUNCE, Verdict.BOUNCED, "5.1.1",
         "gone@example.com"),
        ("dsn_delayed_4_4_1.eml", "dsn", Kind.DELAYED, Verdict.TEMPORARY, "4.4.1",
         "slow@example.net"),
        ("dsn_policy_5_7_1.eml", "dsn", Kind.BOUNCE, Verdict.POLICY, "5.7.1",
         "picky@example.org"),
        ("exim_5_1_1.eml", "heuristic", Kind.BOUNCE, Verdict.BOUNCED, "5.1.1",
         "lost@example.com"),
        ("arf_abuse.eml", "arf", Kind.COMPLAINT, Verdict.COMPLAINED, None, "fan@example.com"),
    ],
)
def test_each_report_is_read_with_its_recipient_hashed(name, form, kind, verdict, status,
                                                       address):
    report = bounces.read_report(fixture(name))
    assert report.format == form
    assert report.public_id == FIXTURE_ID
    (finding,) = report.findings
    assert (finding.kind, finding.verdict, finding.status) == (kind, verdict, status)
    # Spelled "Gone@Example.com" and "<Fan@example.com>" in the reports: one normal form.
    assert finding.address_hashes == {addresses.hash_of(address)}


def test_a_report_keeps_no_plaintext_address():
    for name in ("dsn_postfix_5_1_1.eml", "arf_abuse.eml", "exim_5_1_1.eml"):
        report = bounces.read_report(fixture(name))
        assert "@" not in repr(report)
        assert "example" not in repr(report).replace("address_hashes", "")


def test_a_redacted_complaint_is_known_only_by_our_message_id():
    report = bounces.read_report(fixture("arf_redacted.eml"))
    (finding,) = report.findings
    assert finding.verdict is Verdict.COMPLAINED
    assert finding.address_hashes == frozenset()
    assert report.public_id == FIXTURE_ID


def test_the_message_id_of_our_own_mail_is_recognized(app):
    """The coupling with messages.compose: what we send is what a report is matched by."""
    sent = compose(Envelope(public_id="c0ffee" * 5 + "ab", to_address="fan@example.com",
                            address_hash="ab" * 32, category=Category.TRANSACTIONAL,
                            template="receipt", data=RECEIPT))
    raw = fixture("arf_redacted.eml").replace(
        f"<{FIXTURE_ID}@shop.example>".encode(), sent.message_id.encode())
    assert bounces.read_report(raw).public_id == "c0ffee" * 5 + "ab"


def test_a_message_id_of_another_shape_is_not_taken_for_ours():
    raw = fixture("arf_redacted.eml").replace(
        f"<{FIXTURE_ID}@shop.example>".encode(), b"<20240514.abc@elsewhere.example>")
    assert bounces.read_report(raw).public_id is None


def test_without_a_named_recipient_the_to_of_the_enclosed_original_is_used():
    raw = fixture("arf_abuse.eml").replace(b"Original-Rcpt-To: <Fan@example.com>\n", b"")
    (finding,) = bounces.read_report(raw).findings
    assert finding.address_hashes == {addresses.hash_of("fan@example.com")}


def test_removal_recipient_names_the_address_too():
    raw = fixture("arf_abuse.eml").replace(b"Original-Rcpt-To: <Fan@example.com>",
                                           b"Removal-Recipient: other@example.com")
    (finding,) = bounces.read_report(raw).findings
    assert finding.address_hashes == {addresses.hash_of("other@example.com")}


def test_original_recipient_wins_over_an_alias_final_recipient():
    raw = fixture("dsn_postfix_5_1_1.eml").replace(
        b"Final-Recipient: rfc822; Gone@Example.com", b"Final-Recipient: <alias@example.net>")
    (finding,) = bounces.read_report(raw).findings
    assert addresses.hash_of("gone@example.com") in finding.address_hashes


def test_a_dsn_without_status_takes_the_code_of_its_diagnostic():
    raw = fixture("dsn_postfix_5_1_1.eml").replace(b"Status: 5.1.1\n", b"")
    (finding,) = bounces.read_report(raw).findings
    assert (finding.verdict, finding.status) == (Verdict.BOUNCED, "5.1.1")


def test_a_failure_with_a_4xx_status_is_temporary():
    raw = fixture("dsn_postfix_5_1_1.eml").replace(b"Status: 5.1.1", b"Status: 4.4.7")
    (finding,) = bounces.read_report(raw).findings
    assert (finding.kind, finding.verdict) == (Kind.BOUNCE, Verdict.TEMPORARY)


def test_a_heuristic_bounce_without_a_status_code_marks_nothing():
    raw = fixture("exim_5_1_1.eml").replace(b"550 5.1.1 <lost", b"550 <lost")
    (finding,) = bounces.read_report(raw).findings
    assert (finding.kind, finding.verdict, finding.status) == (
        Kind.BOUNCE, Verdict.UNKNOWN_STATUS, None)


def test_other_feedback_types_are_not_complaints():
    raw = fixture("arf_abuse.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    (finding,) = bounces.read_report(raw).findings
    assert (finding.kind, finding.verdict) == (Kind.FEEDBACK, Verdict.NOT_A_COMPLAINT)


def test_a_forwarded_dsn_is_still_read():
    dsn = fixture("dsn_postfix_5_1_1.eml")
    forward = (b"From: postmaster@shop.example\nTo: bounces@shop.example\nSubject: Fwd: bounce\n"
               b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"fwd\"\n\n"
               b"--fwd\nContent-Type: text/plain\n\nSee attached.\n\n"
               b"--fwd\nContent-Type: message/rfc822\n\n" + dsn + b"\n--fwd--\n")
    report = bounces.read_report(forward)
    assert report.format == "dsn"
    assert report.findings[0].verdict is Verdict.BOUNCED
    assert report.public_id == FIXTURE_ID


@pytest.mark.parametrize(
    "raw",
    [
        fixture("empty.eml"),
        b"   \r\n\r\n",
        fixture("garbage.eml"),
        b"\x00\xff\xfe" * 300,
        b"not a mail at all",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x--\n",
        b"Content-Type: message/feedback-report\n\nVersion: 1\n",
    ],
    ids=["empty", "blank", "a-human-reply", "binary", "text", "empty-report", "no-feedback-type"],
)
def test_what_is_no_report_is_refused(raw):
    with pytest.raises(bounces.UnrecognizedReport):
        bounces.read_report(raw)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        ("5.1.1", Verdict.BOUNCED),
        ("5.1.10", Verdict.BOUNCED),
        ("5.2.1", Verdict.BOUNCED),
        ("5.2.2", Verdict.OTHER_FAILURE),  # mailbox full
        ("5.4.4", Verdict.OTHER_FAILURE),
        ("5.7.1", Verdict.POLICY),
        ("5.7.26", Verdict.POLICY),  # DMARC
        ("4.2.2", Verdict.TEMPORARY),
        ("4.4.1", Verdict.TEMPORARY),
        ("2.0.0", Verdict.UNKNOWN_STATUS),
        ("", Verdict.UNKNOWN_STATUS),
        (None, Verdict.UNKNOWN_STATUS),
        ("192.0.2.1", Verdict.UNKNOWN_STATUS),
    ],
)
def test_only_a_mailbox_problem_is_a_hard_bounce(status, verdict):
    assert bounces.classify_status(status) is verdict


# --- applying -------------------------------------------------------------------------------


def test_a_hard_bounce_marks_the_address_of_our_sent_mail():
    public_id = mailed("gone@example.com")
    outcome = bounces.apply(bounces.read_report(fixture("dsn_postfix_5_1_1.eml", public_id)))
    db.session.commit()
    assert (outcome.kind, outcome.action, outcome.reason, outcome.status, outcome.recipients) == (
        Kind.BOUNCE, bounces.Action.SUPPRESSED, Verdict.BOUNCED, "5.1.1", 1)
    address_hash = addresses.hash_of("gone@example.com")
    assert marks(address_hash) == {Reason.BOUNCED}
    event = db.session.scalars(select(ConsentEvent)
                               .where(ConsentEvent.address_hash == address_hash)).one()
    assert (event.state, event.source, event.contact_id) == ("bounced", "bounce", None)


def test_the_outbox_row_of_our_message_id_decides_the_address():
    """The report names an alias target we never mailed; the Message-ID names our mail."""
    public_id = mailed("buyer@example.com")
    raw = fixture("dsn_postfix_5_1_1.eml", public_id).replace(b"Gone@Example.com",
                                                              b"alias@example.net")
    outcome = bounces.apply(bounces.read_report(raw))
    assert outcome.action is bounces.Action.SUPPRESSED
    assert marks(addresses.hash_of("buyer@example.com")) == {Reason.BOUNCED}
    assert marks(addresses.hash_of("alias@example.net")) == set()


def test_a_report_naming_an_address_we_mailed_without_our_message_id_marks_nothing():
    mailed("gone@example.com")
    with pytest.raises(bounces.NoRecipient):
        bounces.apply(bounces.read_report(fixture("dsn_postfix_5_1_1.eml")))
    assert count(Suppression) == 0
    assert count(ConsentEvent) == 0


def test_the_message_id_of_mail_not_sent_is_not_enough():
    public_id = mailed("gone@example.com", sent=False)
    with pytest.raises(bounces.NoRecipient):
        bounces.apply(bounces.read_report(fixture("dsn_postfix_5_1_1.eml", public_id)))
    assert count(Suppression) == 0


def test_an_address_we_never_mailed_is_not_marked():
    mailed("someone.else@example.com")
    with pytest.raises(bounces.NoRecipient):
        bounces.apply(bounces.read_report(fixture("dsn_postfix_5_1_1.eml")))
    assert count(Suppression) == 0
    assert count(ConsentEvent) == 0


@pytest.mark.parametrize("name", ["dsn_delayed_4_4_1.eml", "dsn_policy_5_7_1.eml"])
def test_delays_and_policy_refusals_change_nothing(name):
    public_id = mailed("buyer@example.com")
    outcome = bounces.apply(bounces.read_report(fixture(name, public_id)))
    assert outcome.action is bounces.Action.NONE
    assert outcome.recipients == 1
    assert count(Suppression) == 0
    assert count(ConsentEvent) == 0


def test_applying_the_same_report_twice_marks_once():
    public_id = mailed("fan@example.com")
    report = bounces.read_report(fixture("arf_abuse.eml", public_id))
    for _ in range(2):
        outcome = bounces.apply(report)
        db.session.commit()
        assert (outcome.kind, outcome.action, outcome.reason) == (
            Kind.COMPLAINT, bounces.Action.SUPPRESSED, Verdict.COMPLAINED)
    assert marks(addresses.hash_of("fan@example.com")) == {Reason.COMPLAINED}
    assert count(Suppression) == 1
    assert count(ConsentEvent) == 1
