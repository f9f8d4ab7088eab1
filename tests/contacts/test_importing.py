"""Importing a CSV file of consented contacts: the rules of ../shared/CONSENT.md, a batch at a
time, set-based, safe to run twice, and beside the running service."""

from __future__ import annotations

import io
import random
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from mailer import addresses
from mailer.consent import services as consent
from mailer.consent.models import ConsentEvent, ConsentSource, Subscription, SubscriptionState
from mailer.contacts import importing
from mailer.contacts.importing import BadRow, ImportFileError, ImportReport, import_csv
from mailer.contacts.models import Contact
from mailer.errors import ValidationFailed
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.processes import ROOT, flask_env
from tests.sql_events import listening


def run_import(text: str, *, topic: str = "news", source: str = "spring fair 2026",
               **options) -> ImportReport:
    return import_csv(io.StringIO(text), topic=topic, source=source, **options)


def contact(email: str) -> Contact | None:
    db.session.expire_all()
    return db.session.scalar(select(Contact).where(Contact.email == email))


def state_of(email: str, slug: str = "news") -> str | None:
    found = contact(email)
    if found is None:
        return None
    return {s.topic.slug: s.state for s in found.subscriptions}.get(slug)


def events() -> list[tuple[str, str, str | None]]:
    return [(e.source, e.state, e.note)
            for e in db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]


def table_snapshot() -> dict[str, list[tuple]]:
    """Every row of the tables an import writes, to compare before and after."""
    db.session.expire_all()
    return {
        "contacts": [tuple(row) for row in db.session.execute(
            select(Contact.__table__).order_by(Contact.id))],
        "subscriptions": [tuple(row) for row in db.session.execute(
            select(Subscription.__table__).order_by(Subscription.id))],
        "consent_events": [tuple(row) for row in db.session.execute(
            select(ConsentEvent.__table__).order_by(ConsentEvent.id))],
    }


def test_a_new_address_is_subscribed_at_once_with_an_import_consent_event(make_topic):
    make_topic("news", double_opt_in=True)  # the consent was given elsewhere: no confirmation
    report = run_import("email,first_name,country\nAnn@Example.com, Ann ,DE\n")
    assert (report.rows, report.created, report.bad_rows) == (1, 1, [])
    ann = contact("ann@example.com")
    assert ann is not None
    assert ann.attributes == {"first_name": "Ann", "country": "DE"}
    assert ann.source == "spring fair 2026"
    assert ann.address_hash == addresses.hash_of("ann@example.com")
    assert ann.partner_sharing is False
    assert state_of("ann@example.com") == SubscriptionState.SUBSCRIBED
    assert events() == [("import", "subscribed", "spring fair 2026")]


def test_bad_rows_are_reported_by_line_and_the_good_ones_imported(make_topic):
    make_topic("news")
    text = (
        "email,country,note\n"
        "ann@example.com,DE,\n"  # 2
        "not-an-address,FR,\n"  # 3
        ",DE,\n"  # 4
        "dan@example.com,DE,card 4111-1111-1111-1111 thanks\n"  # 5
        "eve@example.com,SE,x,extra\n"  # 6
        f"fay@example.com,DE,{'x' * 501}\n"  # 7
        '"gus@example.com","AT","two\nlines"\n'  # 8-9
        "hal@example.com,,\n"  # 10
    )
    report = run_import(text)
    assert [bad.line for bad in report.bad_rows] == [3, 4, 5, 6, 7]
    problems = {bad.line: bad.problem for bad in report.bad_rows}
    assert "card number" in problems[5] and "4111" not in problems[5]
    assert problems[6] == "more fields than the header has"
    assert "500 characters" in problems[7]
    assert (report.rows, report.created) == (8, 3)
    assert contact("gus@example.com").attributes == {"country": "AT", "note": "two\nlines"}
    assert contact("hal@example.com").attributes == {}
    assert db.session.scalar(select(func.count()).select_from(Contact)) == 3


@pytest.mark.parametrize(("text", "message"), [
    ("", "header row"),
    ("name,country\nAnn,DE\n", "no 'email' column"),
    ("email," + "x" * 65 + "\n", "at most 64 characters"),
    ("email," + ",".join(f"c{i}" for i in range(51)) + "\n", "At most 50 columns"),
])
def test_a_file_without_a_usable_header_is_refused_whole(make_topic, text, message):
    make_topic("news")
    with pytest.raises(ImportFileError, match=message):
        run_import(text)


def test_an_unknown_topic_is_refused_before_anything_is_written():
    with pytest.raises(ValidationFailed):
        run_import("email\nann@example.com\n", topic="nope")
    assert contact("ann@example.com") is None


def test_running_the_same_file_twice_changes_nothing(make_topic):
    make_topic("news")
    text = "email,country\n" + "".join(f"user{i}@example.com,DE\n" for i in range(30))
    first = run_import(text, batch_rows=7)
    assert first.created == 30
    before = table_snapshot()
    again = run_import(text, batch_rows=7)
    assert (again.created, again.updated, again.already_subscribed) == (0, 0, 30)
    # Not a row written: no new consent event, not even an updated_at moved.
    assert table_snapshot() == before


def test_an_unsubscribed_contact_stays_unsubscribed_and_unchanged(make_topic):
    news = make_topic("news", double_opt_in=False)
    run_import("email,country\nann@example.com,DE\n")
    ann = contact("ann@example.com")
    consent.set_state(ann, news, SubscriptionState.UNSUBSCRIBED, ConsentSource.PREFERENCES)
    db.session.commit()
    before = table_snapshot()
    report = run_import("email,country\nann@example.com,FR\n")
    assert (report.kept_unsubscribed, report.updated, report.created) == (1, 0, 0)
    assert state_of("ann@example.com") == SubscriptionState.UNSUBSCRIBED
    assert table_snapshot() == before  # no event, no attribute changed


def test_an_address_that_unsubscribed_without_a_contact_is_not_added(make_topic):
    news = make_topic("news")
    suppressions.suppress(addresses.hash_of("ann@example.com"), Reason.UNSUBSCRIBED,
                          source=ConsentSource.ONE_CLICK, topic_id=news.id)
    db.session.commit()
    report = run_import("email\nann@example.com\nbob@example.com\n")
    assert (report.kept_unsubscribed, report.created) == (1, 1)
    assert contact("ann@example.com") is None


ADDRESS_WIDE_MARKS = [reason for reason in Reason if reason is not Reason.UNSUBSCRIBED]


@pytest.mark.parametrize("reason", ADDRESS_WIDE_MARKS)
def test_a_marked_address_is_left_exactly_as_it_is(make_topic, reason):
    make_topic("news")
    run_import("email,country\nknown@example.com,DE\n")
    # One known contact and one unknown address, both marked; a third address is not.
    for email in ("known@example.com", "unknown@example.com"):
        suppressions.suppress(addresses.hash_of(email), reason, source=ConsentSource.OPERATOR)
    db.session.commit()
    known = contact("known@example.com")
    db.session.execute(Subscription.__table__.update().values(state="pending"))
    db.session.commit()
    before = table_snapshot()
    report = run_import("email,country\nknown@example.com,FR\nunknown@example.com,DE\n"
                        "fresh@example.com,DE\n")
    assert (report.kept_marked, report.created, report.updated) == (2, 1, 0)
    after = table_snapshot()
    # Nothing of the marked ones changed: no contact made (no plaintext of an erased or
    # quarantined address comes back), no subscription, no attribute, no event.
    assert contact("unknown@example.com") is None
    assert state_of("known@example.com") == SubscriptionState.PENDING
    assert contact("known@example.com").attributes == known.attributes == {"country": "DE"}
    assert after["consent_events"][:len(before["consent_events"])] == before["consent_events"]
    new_events = after["consent_events"][len(before["consent_events"]):]
    assert [row[1] for row in new_events] == [contact("fresh@example.com").id]


def test_a_pending_contact_is_subscribed_by_the_import(make_topic, client, auth):
    make_topic("news", double_opt_in=True)
    response = client.post("/api/v1/contacts", json={"email": "ann@example.com",
                                                     "topics": ["news"]}, headers=auth)
    assert response.get_json()["subscriptions"] == {"news": "pending"}
    report = run_import("email\nann@example.com\n")
    assert (report.updated, report.created) == (1, 0)
    assert state_of("ann@example.com") == SubscriptionState.SUBSCRIBED
    assert events()[-1] == ("import", "subscribed", "spring fair 2026")
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_a_known_contact_gets_the_new_attributes_merged_in(make_topic, client, auth):
    make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", json={"email": "ann@example.com", "topics": ["news"],
                                          "attributes": {"vip": True, "country": "AT"}},
                headers=auth)
    count = len(events())
    report = run_import("email,country,city\nann@example.com,DE,Berlin\n")
    assert (report.updated, report.already_subscribed) == (1, 0)
    assert contact("ann@example.com").attributes == {"vip": True, "country": "DE",
                                                     "city": "Berlin"}
    assert len(events()) == count  # already subscribed: no consent changed
    again = run_import("email,country,city\nann@example.com,DE,Berlin\n")
    assert (again.updated, again.already_subscribed) == (0, 1)


def test_a_merge_past_the_attribute_limit_is_a_bad_row(make_topic, client, auth, monkeypatch):
    make_topic("news", double_opt_in=False)
    client.post("/api/v1/contacts", json={"email": "ann@example.com", "topics": [],
                                          "attributes": {"a": "1", "b": "2"}}, headers=auth)
    monkeypatch.setattr("mailer.contacts.services.MAX_ATTRIBUTES", 2)
    report = run_import("email,c\nann@example.com,3\nbob@example.com,3\n")
    assert report.bad_rows == [BadRow(2, "At most 2 attributes.")]
    assert report.created == 1
    assert state_of("ann@example.com") is None


def test_an_address_twice_in_a_file_is_imported_in_file_order(make_topic):
    make_topic("news")
    report = run_import("email,country\nann@example.com,DE\nbob@example.com,DE\n"
                        "ANN@example.com,FR\n")
    assert (report.rows, report.created, report.updated) == (3, 2, 1)
    assert contact("ann@example.com").attributes == {"country": "FR"}
    assert [state for _source, state, _note in events()] == ["subscribed", "subscribed"]


def test_progress_is_reported_after_each_committed_batch(make_topic):
    make_topic("news")
    text = "email\n" + "".join(f"user{i}@example.com\n" for i in range(25)) + "bad\n"
    seen: list[tuple[int, int]] = []

    def progress(report: ImportReport) -> None:
        # Called after the batch's commit: what it counts is in the database already.
        committed = db.session.scalar(select(func.count()).select_from(Contact))
        seen.append((report.rows, committed))
        db.session.rollback()

    report = run_import(text, batch_rows=10, on_progress=progress)
    assert seen == [(10, 10), (20, 20), (26, 25)]
    assert report.rows == 26 and report.bad_rows == [BadRow(27, report.bad_rows[0].problem)]


def test_each_batch_takes_the_same_statements_whatever_its_size(make_topic):
    """Set-based: a batch of 500 rows sends no more statements than a batch of 5 (the old
    import sent several per row)."""
    make_topic("news")

    def statements_for(rows: int, first: int) -> int:
        text = "email,n\n" + "".join(f"user{i}@example.com,{i}\n"
                                     for i in range(first, first + rows))
        sent: list[str] = []
        with listening(lambda *args: sent.append(args[2])):
            run_import(text, batch_rows=1_000)
        return len(sent)

    small, large = statements_for(5, 0), statements_for(500, 5)
    assert large == small <= 20
    # Known contacts (a second run): no more statements either.
    assert statements_for(500, 5) <= small


def test_a_batch_that_meets_a_deadlock_is_run_again(make_topic, monkeypatch):
    """A concurrent writer's deadlock (or busy SQLite file) rolls the batch back; the import
    runs it again rather than failing half-way."""
    from sqlalchemy.exc import OperationalError

    make_topic("news")
    original = importing._BatchWriter.write
    failures = iter([True, False, False])

    class Deadlock(Exception):
        sqlstate = "40P01"
        sqlite_errorcode = 5  # SQLITE_BUSY

    def write_or_fail(self, rows):
        counts = original(self, rows)
        if next(failures):
            raise OperationalError("UPDATE ...", {}, Deadlock())
        return counts

    monkeypatch.setattr(importing._BatchWriter, "write", write_or_fail)
    report = run_import("email\nann@example.com\nbob@example.com\n")
    assert report.created == 2
    assert len(events()) == 2  # the failed attempt left nothing behind


# ----------------------------------------------------------------- beside the running service

CONCURRENT_ROWS = 20_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(app, port: int) -> subprocess.Popen[str]:
    """The service as in production: gunicorn, two worker processes, on the test database."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
         "wsgi:app"],
        cwd=ROOT, env=flask_env(app, MAILER_RATELIMIT_ENABLED="0"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise AssertionError("the service did not start")


def test_importing_20000_rows_while_the_api_creates_contacts(app, tmp_path, make_topic,
                                                             api_key):
    """`mailer import` as a process of its own, while the service (gunicorn, two processes)
    answers POST /api/v1/contacts from four clients, some for addresses of the file: the
    import finishes without error, every request is answered 200 or 201, and each address
    ends with one contact, subscribed, with one consent event saying so."""
    make_topic("news", double_opt_in=False)
    path = tmp_path / "list.csv"
    path.write_text("email,n\n" + "".join(f"user{i}@import.example,{i}\n"
                                          for i in range(CONCURRENT_ROWS)), encoding="utf-8")
    server = _serve(app, port := _free_port())
    importing_done = threading.Event()
    answers: list[int] = []
    errors: list[BaseException] = []

    def create_contacts(client_number: int) -> None:
        pick = random.Random(client_number)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                              headers={"Authorization": f"Bearer {api_key}"},
                              timeout=30) as http:
                sent = 0
                while not importing_done.is_set():
                    # Every other request names an address of the file: the import and the
                    # API race for the same rows.
                    email = (f"user{pick.randrange(CONCURRENT_ROWS)}@import.example"
                             if sent % 2 else f"api{client_number}-{sent}@example.com")
                    response = http.post("/api/v1/contacts",
                                         json={"email": email, "topics": ["news"]})
                    answers.append(response.status_code)
                    sent += 1
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)

    clients = [threading.Thread(target=create_contacts, args=(n,)) for n in range(4)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(1.0)  # the clients are writing before the import starts
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "mailer", "import", str(path),
             "--topic", "news", "--source", "crm export"],
            cwd=ROOT, env=flask_env(app), capture_output=True, text=True, timeout=600)
    finally:
        importing_done.set()
        for thread in clients:
            thread.join(timeout=60)
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not errors, errors
    assert len(answers) > 40, "the API was hardly used during the import"
    assert set(answers) <= {200, 201}, sorted(set(answers))
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith(f"imported {CONCURRENT_ROWS} rows: "), summary
    assert summary.endswith("kept unsubscribed 0, kept marked 0, bad rows 0"), summary

    db.session.expire_all()
    imported = (select(func.count()).select_from(Contact)
                .where(Contact.email.like("%@import.example")))
    assert db.session.scalar(imported) == CONCURRENT_ROWS
    contacts_count = db.session.scalar(select(func.count()).select_from(Contact))
    subscribed = db.session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.state == SubscriptionState.SUBSCRIBED))
    assert subscribed == contacts_count
    # Whoever came first subscribed the address and logged it; the other changed nothing.
    subscribed_events = db.session.scalar(
        select(func.count(func.distinct(ConsentEvent.contact_id)))
        .where(ConsentEvent.state == SubscriptionState.SUBSCRIBED))
    all_events = db.session.scalar(select(func.count()).select_from(ConsentEvent))
    assert subscribed_events == all_events == contacts_count
