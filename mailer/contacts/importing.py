"""Importing consented contacts from a CSV file (the `mailer import` command)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from mailer.card_numbers import holds_card_number
from mailer.consent.models import ConsentSource
from mailer.consent.services import RequestKind
from mailer.contacts import services as contacts
from mailer.errors import MailerError
from mailer.extensions import db
from mailer.topics.services import topics_by_slug

BATCH_SIZE = 500


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, no email column)."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    kept_unsubscribed: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


def _rows(handle: IO[str]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(handle)
    if not reader.fieldnames:
        raise ImportFileError("The file is empty: it needs a header row with an 'email' column.")
    names = [name.strip() for name in reader.fieldnames]
    if "email" not in names:
        raise ImportFileError("The header row has no 'email' column.")
    reader.fieldnames = names
    for row in reader:
        yield reader.line_num, row


def _row_problem(row: dict[str, str]) -> str | None:
    if None in row:
        return "more fields than the header has"
    if holds_card_number(list(row.values())):
        return "holds a payment card number (not imported: card numbers are never kept)"
    return None


def import_csv(
    handle: IO[str],
    *,
    topic: str,
    source: str,
    on_row: Callable[[], None] = lambda: None,
) -> ImportReport:
    """Import each good row as a consented subscriber of `topic`; report bad rows by line number.

    Rows are committed in batches. An address that unsubscribed from the topic
    stays unsubscribed, and a marked address gets `pending` (../shared/CONSENT.md).
    """
    topics_by_slug([topic], field="topic")
    report = ImportReport()
    pending = 0
    for line, row in _rows(handle):
        on_row()
        problem = _row_problem(row)
        if problem is None:
            attributes = {
                name: value.strip()
                for name, value in row.items()
                if name != "email" and name and value and value.strip()
            }
            try:
                with db.session.begin_nested():
                    result = contacts.upsert(
                        row.get("email") or "",
                        topics=[topic],
                        source=source,
                        attributes=attributes,
                        channel=ConsentSource.IMPORT,
                        kind=RequestKind.IMPORTED,
                    )
            except MailerError as exc:
                details = [m for messages in exc.fields.values() for m in messages]
                problem = "; ".join(str(d) for d in details) or exc.message
            else:
                report.created += result.created
                report.updated += not result.created
                report.kept_unsubscribed += bool(result.outcome.kept_unsubscribed)
        if problem is not None:
            report.bad_rows.append((line, problem))
        pending += 1
        if pending >= BATCH_SIZE:
            db.session.commit()
            pending = 0
    db.session.commit()
    return report
