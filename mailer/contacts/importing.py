"""Importing consented contacts from a CSV file (`mailer import`, and the console's upload).

The file is read a batch of rows at a time. Each batch is checked in Python (address,
card numbers, attributes), then written set-based in one short transaction: the rows go into
a temporary staging table, and a dozen statements decide and write the whole batch at once
(`INSERT ... SELECT ... ON CONFLICT DO NOTHING`, `UPDATE ... WHERE EXISTS`), never a row at a
time. The loop below commits each batch, so a long import never holds a lock for long and
runs beside the service; a batch that meets a concurrent writer's deadlock or a busy SQLite
file is rolled back and run again.

The consent rules are those of a contact added through the API (../shared/CONSENT.md), with
what an import carries: consent collected elsewhere, so the address is subscribed at once,
whatever the topic's double opt-in. What an import never does is lift an unsubscribe or a
mark: an address unsubscribed from the topic, or carrying an address-wide mark, is left
exactly as it is (not added, not changed) and counted as kept.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailer import addresses
from mailer.card_numbers import holds_card_number
from mailer.consent import gate
from mailer.consent.models import (
    ConsentEvent,
    ConsentSource,
    ConsentSubject,
    Subscription,
    SubscriptionState,
)
from mailer.contacts.models import Contact
from mailer.contacts.services import MAX_ATTRIBUTE_NAME, MAX_ATTRIBUTES, check_attributes
from mailer.database import UTCDateTime, utcnow
from mailer.errors import ValidationFailed
from mailer.extensions import db
from mailer.suppressions.models import Reason, Suppression
from mailer.topics.services import refuse_retired, topics_by_slug

logger = logging.getLogger(__name__)

# Rows per batch: one transaction each. A few thousand keep the statements per row low and
# each transaction (on SQLite: the time the file's write lock is held) well under a second.
BATCH_ROWS = 2_000
# A batch rolled back by a concurrent writer (deadlock, busy SQLite file, a contact erased
# under it) is run again this many times in all before the import gives up.
BATCH_ATTEMPTS = 5


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, no email column, bad column names)."""


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, by its line number in the file, and why."""

    line: int
    problem: str


@dataclass
class ImportReport:
    """What an import did so far; every row read is counted in exactly one of the counts
    after `rows`."""

    rows: int = 0  # data rows handled: in committed batches, or skipped as bad
    created: int = 0  # new contacts, subscribed to the topic
    updated: int = 0  # known contacts now subscribed, or given new attributes
    already_subscribed: int = 0  # known contacts subscribed, with nothing new: unchanged
    kept_unsubscribed: int = 0  # unsubscribed from the topic: left as they are
    kept_marked: int = 0  # an address-wide mark (complained, left, erased...): left as they are
    bad_rows: list[BadRow] = field(default_factory=list)

    def add(self, batch: ImportReport) -> None:
        """Count a batch's report in this one."""
        self.rows += batch.rows
        self.created += batch.created
        self.updated += batch.updated
        self.already_subscribed += batch.already_subscribed
        self.kept_unsubscribed += batch.kept_unsubscribed
        self.kept_marked += batch.kept_marked
        # A batch's lines all come after the batches before it: its own bad rows in order
        # keep the whole list in order.
        self.bad_rows.extend(sorted(batch.bad_rows, key=lambda bad: bad.line))

    def summary(self) -> str:
        """The counts in one line of plain words."""
        return (f"{self.rows} rows: created {self.created}, updated {self.updated}, "
                f"already subscribed {self.already_subscribed}, "
                f"kept unsubscribed {self.kept_unsubscribed}, kept marked {self.kept_marked}, "
                f"bad rows {len(self.bad_rows)}")


ProgressCallback = Callable[[ImportReport], None]


# The staging table: one batch of checked rows. TEMPORARY, so each connection has its own and
# nothing of it is shared or migrated; its rows are deleted before each commit (PostgreSQL also
# empties it at commit), so no address stays behind in it.
_staging_metadata = MetaData()
STAGING = Table(
    "mailer_import_rows",
    _staging_metadata,
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("email", String(254), nullable=False),
    Column("address_hash", String(64), nullable=False),
    Column("attributes", JSON, nullable=False),
    # The address's contact, and its subscription's state for the topic, once looked up.
    Column("contact_id", Integer),
    Column("state", String(16)),
    # "marked" or "unsubscribed": the row changes nothing.
    Column("kept", String(16)),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
_rows = STAGING.c
_contacts = Contact.__table__
_subscriptions = Subscription.__table__
_events = ConsentEvent.__table__
_marks = Suppression.__table__

_INSERT_FOR = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def import_csv(
    handle: IO[str],
    *,
    topic: str,
    source: str,
    on_progress: ProgressCallback | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportReport:
    """Import each good row of an open CSV text file as a consented subscriber of `topic`.

    The file has a header row with an `email` column; every other column is an attribute
    (empty values are left out). Bad rows (invalid address, a payment card number, a bad
    attribute, more fields than the header) are reported in the result by line number and
    skipped. `source` says where consent was collected; it is the note of each consent event
    (source `import`). Each batch of rows is committed on its own, and `on_progress` is called
    with the report so far after each. Running the same file again changes nothing.
    It commits the session itself (after reading the topic, and after each batch): call it
    with nothing of the caller's pending.

    Raises ImportFileError for a file without a usable header and ValidationFailed for an
    unknown or retired topic, before anything is written.
    """
    reader = _reader(handle)
    found = topics_by_slug([topic], field="topic")[topic]
    refuse_retired([found], field="topic")  # a retired topic takes no new subscription
    topic_id = found.id
    db.session.commit()  # end the read: no transaction stays open while rows are checked
    report = ImportReport()
    batches = _checked_batches(reader, batch_rows)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer-import-reader") as reading:
        # The next batch is read and checked (most of an import's own work: validating the
        # addresses) while this one is written, so the database and Python work at once.
        # Only this thread talks to the database.
        upcoming = reading.submit(next, batches, None)
        while (batch := upcoming.result()) is not None:
            upcoming = reading.submit(next, batches, None)
            rows, bad_rows = batch
            _write_batch(rows, bad_rows, topic_id, source, report)
            if on_progress is not None:
                on_progress(report)
    return report


def _checked_batches(reader: Iterator[tuple[int, dict[str, str | None]]], batch_rows: int
                     ) -> Iterator[tuple[list[dict[str, Any]], list[BadRow]]]:
    """The file's good rows in batches, each with the bad rows read since the one before;
    the last batch may be empty."""
    batch: dict[str, dict[str, Any]] = {}
    bad_rows: list[BadRow] = []
    for line, row in reader:
        checked = _check_row(line, row)
        if isinstance(checked, BadRow):
            bad_rows.append(checked)
            continue
        # An address met again within the batch: the batch so far is written first, so the
        # repeat is imported after it, as if the file were read a row at a time.
        if checked["email"] in batch or len(batch) >= batch_rows:
            yield list(batch.values()), bad_rows
            batch, bad_rows = {}, []
        batch[checked["email"]] = checked
    yield list(batch.values()), bad_rows


def _reader(handle: IO[str]) -> Iterator[tuple[int, dict[str, str | None]]]:
    """The file's rows with their line numbers, after checking the header."""
    reader = csv.DictReader(handle)
    if not reader.fieldnames:
        raise ImportFileError("The file is empty: it needs a header row with an 'email' column.")
    names = [name.strip() for name in reader.fieldnames]
    if "email" not in names:
        raise ImportFileError("The header row has no 'email' column.")
    attribute_names = [name for name in names if name and name != "email"]
    if len(attribute_names) > MAX_ATTRIBUTES:
        raise ImportFileError(f"At most {MAX_ATTRIBUTES} columns besides 'email'.")
    long_names = [name for name in attribute_names if len(name) > MAX_ATTRIBUTE_NAME]
    if long_names:
        raise ImportFileError(f"Column names are at most {MAX_ATTRIBUTE_NAME} characters.")
    reader.fieldnames = names

    def rows() -> Iterator[tuple[int, dict[str, str | None]]]:
        for row in reader:
            yield reader.line_num, row

    return rows()


def _check_row(line: int, row: dict[str, str | None]) -> dict[str, Any] | BadRow:
    """The row as a staging row (address normalized, attributes; the address's hash is added
    where the app's key is at hand), or why not."""
    if None in row:
        return BadRow(line, "more fields than the header has")
    values = [value for value in row.values() if value]
    if holds_card_number(values):
        return BadRow(line, "holds a payment card number (not imported: card numbers are "
                            "never kept)")
    try:
        email = addresses.normalize(row.get("email") or "")
    except addresses.InvalidAddress as exc:
        return BadRow(line, str(exc))
    attributes = {name: value.strip() for name, value in row.items()
                  if name and name != "email" and value and value.strip()}
    try:
        check_attributes(attributes)
    except ValidationFailed as exc:
        return BadRow(line, "; ".join(exc.fields["attributes"]))
    return {"line": line, "email": email, "attributes": attributes}


def _write_batch(rows: list[dict[str, Any]], bad_rows: list[BadRow], topic_id: int,
                 source: str, report: ImportReport) -> None:
    """Write one batch in a transaction of its own, committed here, and count it in `report`;
    run it again when a concurrent writer made it fail (nothing of a failed attempt stays)."""
    counts = ImportReport()
    for row in rows:
        row["address_hash"] = addresses.keyed_hash(row["email"])
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        if not rows:
            break
        try:
            counts = _BatchWriter(topic_id, source).write(rows)
            db.session.commit()
        except DBAPIError as exc:
            db.session.rollback()
            if attempt == BATCH_ATTEMPTS or not _worth_retrying(exc):
                raise
            logger.warning("import batch from line %d rolled back by a concurrent writer "
                           "(attempt %d of %d), running it again", rows[0]["line"], attempt,
                           BATCH_ATTEMPTS)
        else:
            break
    counts.rows = len(rows) + len(bad_rows)
    counts.bad_rows.extend(bad_rows)
    report.add(counts)


# PostgreSQL: deadlock detected, serialization failure. SQLite: the file stayed busy longer
# than the busy timeout.
_RETRY_SQLSTATES = {"40P01", "40001"}
_RETRY_SQLITE_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def _worth_retrying(exc: DBAPIError) -> bool:
    """Whether the batch failed because of what another writer did at the same time."""
    if isinstance(exc, IntegrityError):
        # A contact erased between our reads and writes (its subscription's foreign key).
        return True
    driver_error = exc.orig
    if getattr(driver_error, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    return getattr(driver_error, "sqlite_errorcode", None) in _RETRY_SQLITE_CODES


class _BatchWriter:
    """The statements of one batch, in order; each runs once for the whole batch.

    Every lookup from a staging row into a big table is a correlated subquery on a unique
    key (the address hash, the contact and topic): a plan the database cannot turn into a
    scan of the whole table, whatever its statistics say (PostgreSQL's lag far behind during
    a big import, and a temporary table has none).
    """

    def __init__(self, topic_id: int, source: str) -> None:
        self.topic_id = topic_id
        self.source = source
        self.now = utcnow()
        self.session = db.session

    def _now(self) -> ColumnElement[dt.datetime]:
        return literal(self.now, UTCDateTime())

    def write(self, rows: list[dict[str, Any]]) -> ImportReport:
        counts = ImportReport()
        connection = self.session.connection()
        dialect_name = connection.dialect.name
        STAGING.create(connection, checkfirst=True)
        self.session.execute(STAGING.insert(), rows)
        # The gate's own rule: an address-wide mark only the address (or, for a bounce, an
        # operator) lifts; an import adds nothing to such an address.
        counts.kept_marked = self._keep("marked", gate.needs_own_confirmation(_rows.address_hash))
        counts.kept_unsubscribed = self._keep("unsubscribed", self._unsubscribed_by_a_mark())
        self._find_contacts()
        counts.kept_unsubscribed += self._keep(
            "unsubscribed", _rows.state == SubscriptionState.UNSUBSCRIBED.value)
        known = self._update_known(counts)
        candidates = len(rows) - counts.kept_marked - counts.kept_unsubscribed - known
        counts.created = self._insert_new(dialect_name)
        # A new address another writer (an API request) made between our lookup and our
        # insert is known now, and subscribed below like any known contact.
        counts.updated += candidates - counts.created
        self._find_contacts()
        self._subscribe(dialect_name)
        self.session.execute(delete(STAGING))
        return counts

    def _keep(self, why: str, condition: ColumnElement[bool]) -> int:
        """Set aside the rows that must change nothing; how many there were."""
        result = self.session.execute(
            update(STAGING).where(_rows.kept.is_(None), condition).values(kept=why))
        return result.rowcount

    def _unsubscribed_by_a_mark(self) -> ColumnElement[bool]:
        """An address with no contact that unsubscribed from the topic (a topic-scoped mark)."""
        return exists().where(_marks.c.address_hash == _rows.address_hash,
                              _marks.c.reason == Reason.UNSUBSCRIBED.value,
                              _marks.c.topic_id == self.topic_id)

    def _find_contacts(self) -> None:
        """Fill in the contact of each row whose address has one, and its subscription's
        state for the topic."""
        # Each asked in WHERE too, so that a row with nothing to fill in is not rewritten
        # (most rows of a big first import): a scalar subquery, which no plan turns into a
        # join over the whole table.
        contact_id = (select(_contacts.c.id)
                      .where(_contacts.c.address_hash == _rows.address_hash)
                      .scalar_subquery())
        self.session.execute(
            update(STAGING).where(_rows.kept.is_(None), _rows.contact_id.is_(None),
                                  contact_id.is_not(None))
            .values(contact_id=contact_id))
        state = (select(_subscriptions.c.state)
                 .where(_subscriptions.c.contact_id == _rows.contact_id,
                        _subscriptions.c.topic_id == self.topic_id)
                 .scalar_subquery())
        self.session.execute(
            update(STAGING).where(_rows.kept.is_(None), _rows.contact_id.is_not(None),
                                  _rows.state.is_(None), state.is_not(None))
            .values(state=state))

    def _update_known(self, counts: ImportReport) -> int:
        """Merge the new attributes (and a first source) into the contacts that exist, and
        count each as updated, already subscribed or bad (too many attributes merged); how
        many there were."""
        def of_contact(column: ColumnElement[Any]) -> ColumnElement[Any]:
            return (select(column).where(_contacts.c.id == _rows.contact_id)
                    .scalar_subquery())

        known = self.session.execute(
            select(_rows.line, _rows.attributes, _rows.contact_id, _rows.state,
                   of_contact(_contacts.c.attributes), of_contact(_contacts.c.source))
            .where(_rows.kept.is_(None), _rows.contact_id.is_not(None))
        ).all()
        changes = []
        bad_lines = []
        for line, new, contact_id, state, current, contact_source in known:
            merged = {**(current or {}), **new}
            try:
                check_attributes(merged)
            except ValidationFailed as exc:
                counts.bad_rows.append(BadRow(line, "; ".join(exc.fields["attributes"])))
                bad_lines.append(line)
                continue
            changed = merged != (current or {}) or not contact_source
            if changed:
                changes.append({"b_id": contact_id, "b_attributes": merged})
            if changed or state != SubscriptionState.SUBSCRIBED:
                counts.updated += 1
            else:
                counts.already_subscribed += 1
        if changes:
            self.session.execute(
                update(_contacts).where(_contacts.c.id == bindparam("b_id"))
                .values(attributes=bindparam("b_attributes", type_=JSON()),
                        source=func.coalesce(_contacts.c.source, literal(self.source)),
                        updated_at=self._now()),
                changes)
        if bad_lines:
            self.session.execute(delete(STAGING).where(_rows.line.in_(bad_lines)))
        return len(known)

    def _insert_new(self, dialect_name: str) -> int:
        """Insert a contact for each row whose address has none; how many were inserted."""
        now = self._now()
        new_rows = (
            select(_rows.email, _rows.address_hash, _rows.attributes, literal(self.source),
                   false(), now, now)
            # Asked again here, in this statement's own snapshot: on PostgreSQL an erasure
            # that committed since the batch's first look must not get its plaintext back.
            .where(_rows.kept.is_(None), _rows.contact_id.is_(None),
                   ~gate.needs_own_confirmation(_rows.address_hash))
        )
        statement = (
            _INSERT_FOR[dialect_name](_contacts)
            .from_select(["email", "address_hash", "attributes", "source", "partner_sharing",
                          "created_at", "updated_at"], new_rows)
            .on_conflict_do_nothing()
            # An INSERT's rowcount is kept only when asked for (UPDATE's always is).
            .execution_options(preserve_rowcount=True)
        )
        return self.session.execute(statement).rowcount

    def _subscribe(self, dialect_name: str) -> None:
        """Subscribe each row's contact that is not subscribed yet (no row for the topic, or
        a pending one), and log each as a consent event of source `import`."""
        subscribes = and_(_rows.kept.is_(None), _rows.contact_id.is_not(None),
                          or_(_rows.state.is_(None),
                              _rows.state == SubscriptionState.PENDING.value))
        now = self._now()
        subscribed = literal(SubscriptionState.SUBSCRIBED.value)
        insert = _INSERT_FOR[dialect_name](_subscriptions).from_select(
            ["contact_id", "topic_id", "state", "created_at", "updated_at"],
            select(_rows.contact_id, literal(self.topic_id), subscribed, now, now)
            .where(subscribes))
        # A pending row (found, or made meanwhile by an API request) becomes subscribed; a
        # subscribed or unsubscribed one made meanwhile stays as it is.
        self.session.execute(insert.on_conflict_do_update(
            index_elements=["contact_id", "topic_id"],
            set_={"state": SubscriptionState.SUBSCRIBED.value, "updated_at": now},
            where=_subscriptions.c.state == SubscriptionState.PENDING.value))
        self.session.execute(
            _events.insert().from_select(
                ["contact_id", "address_hash", "subject", "topic_id", "state", "source", "note",
                 "created_at"],
                select(_rows.contact_id, _rows.address_hash,
                       literal(ConsentSubject.TOPIC.value), literal(self.topic_id), subscribed,
                       literal(ConsentSource.IMPORT.value), literal(self.source), now)
                .where(subscribes)))
