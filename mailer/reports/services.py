"""Audience reports: how many subscribed contacts each group holds, k-anonymous.

A report counts, in SQL (one GROUP BY over the subscriptions or the contacts, never a Python
loop over contacts), the contacts subscribed to a topic, grouped by topic and/or by one or two
contact attributes. What leaves the service protects the small groups:

- **Primary suppression.** A group of fewer than k contacts (`MAILER_REPORT_MIN_GROUP`, at
  least 5) is never shown; its count goes into `other`, the sum of the withheld groups.
- **Secondary suppression.** `other` and `total` (the sum of every group, shown or not) must
  not give a withheld count away: when only one group is withheld, `other` would be its count;
  when the withheld groups together hold fewer than k, `other` would be a small group of its
  own. Then the next smallest shown group is withheld too, until neither is true. In a report
  by two dimensions the same holds in every row and every column, since the report by one
  dimension publishes each row's (or column's) sum. When no group is left to withhold,
  `other` and `total` are null.
- **One report a day.** A grouping's report is computed once per UTC day and stored; every
  later request that day, from any process, answers the stored counts. So nobody can watch the
  counts move as one known person joins or leaves: a day's change mixes everybody's.

What it does not protect: a sponsor who sees the reports of many days learns how each shown
group changed from day to day (for a shop where one person a day joins a group, the change is
that person); reports by different attributes are made independently, so unusual combinations
of public knowledge may still narrow a person down. A report counts; it never names anyone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from mailer.consent import gate
from mailer.consent.models import Subscription
from mailer.contacts.models import Contact
from mailer.database import utcnow
from mailer.errors import ValidationFailed
from mailer.extensions import db
from mailer.reports.models import AudienceReport
from mailer.topics.models import Topic

MAX_DIMENSIONS = 2
# Attribute names a report groups by: a safe subset of what contacts may carry, so that a
# name is a plain JSON path on both databases.
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOPIC = "topic"
ATTRIBUTE_PREFIX = "attribute:"


@dataclass(frozen=True, slots=True)
class Dimension:
    """One way of grouping: by topic, or by the value of one contact attribute."""

    kind: str  # "topic" or "attribute"
    name: str  # the key's name in a group: "topic", or the attribute's name

    @property
    def spec(self) -> str:
        """As the `by` parameter names it."""
        return TOPIC if self.kind == TOPIC else f"{ATTRIBUTE_PREFIX}{self.name}"


@dataclass(frozen=True, slots=True)
class Cell:
    """One group: its key (a value per dimension) and how many contacts it holds."""

    key: tuple[Any, ...]
    count: int


@dataclass(frozen=True, slots=True)
class Report:
    """A report as it may be shown: the groups of at least k, `other` and `total` (or None)."""

    dimensions: tuple[Dimension, ...]
    min_group: int
    groups: list[Cell]
    other: int | None
    total: int | None

    def as_json(self) -> dict[str, Any]:
        """The API's answer: `{"by", "min_group", "groups": [{"key", "count"}], "other",
        "total"}`."""
        return {
            "by": [d.spec for d in self.dimensions],
            "min_group": self.min_group,
            "groups": [{"key": {d.name: value for d, value in zip(self.dimensions, cell.key,
                                                                    strict=True)},
                        "count": cell.count} for cell in self.groups],
            "other": self.other,
            "total": self.total,
        }


def parse_dimensions(by: str) -> tuple[Dimension, ...]:
    """The dimensions of a `by` parameter (`topic`, `attribute:NAME`, one or two, comma-
    separated); raises ValidationFailed naming `by` for anything else."""
    dimensions: list[Dimension] = []
    for part in (p.strip() for p in by.split(",")):
        if part == TOPIC:
            dimensions.append(Dimension(TOPIC, TOPIC))
        elif part.startswith(ATTRIBUTE_PREFIX) and ATTRIBUTE_NAME.fullmatch(
                part[len(ATTRIBUTE_PREFIX):]):
            dimensions.append(Dimension("attribute", part[len(ATTRIBUTE_PREFIX):]))
        else:
            raise ValidationFailed(fields={"by": [
                f"{part!r} is neither 'topic' nor 'attribute:NAME' (NAME: letters, digits, "
                f"'_' and '-', 1 to 64)."]})
    names = [d.name for d in dimensions]
    if not 1 <= len(dimensions) <= MAX_DIMENSIONS:
        raise ValidationFailed(fields={"by": ["Group by one or two dimensions."]})
    if len(set(names)) != len(names):
        raise ValidationFailed(fields={"by": ["Each dimension at most once (and no attribute "
                                              "named 'topic' beside the topic)."]})
    return tuple(dimensions)


def min_group() -> int:
    """k: the smallest group a report shows (MAILER_REPORT_MIN_GROUP, checked at start)."""
    from config import REPORT_MIN_GROUP_FLOOR

    k = int(current_app.config.get("MAILER_REPORT_MIN_GROUP", 10))
    if k < REPORT_MIN_GROUP_FLOOR:  # a configuration object made by hand, not from_env()
        raise ValueError(f"MAILER_REPORT_MIN_GROUP must be at least {REPORT_MIN_GROUP_FLOOR}")
    return k


# -- counting (SQL) ----------------------------------------------------------------------------

def _attribute_columns(name: str) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The JSON type and the value (as the database reads it) of one attribute of a contact;
    both NULL where the contact lacks it."""
    if db.engine.dialect.name == "postgresql":
        node = Contact.attributes[name]  # attributes -> 'name'
        return func.json_typeof(node), Contact.attributes[name].as_string()
    path = f'$."{name}"'  # the name is checked: no quote or backslash in it
    return func.json_type(Contact.attributes, path), func.json_extract(Contact.attributes, path)


def _value(json_type: str | None, value: Any) -> Any:
    """An attribute's value as JSON has it, from either database's reading of it."""
    if json_type in (None, "null"):
        return None
    if json_type in ("true", "false"):  # SQLite
        return json_type == "true"
    if json_type == "boolean":  # PostgreSQL: the text 'true' or 'false'
        return value == "true"
    if json_type in ("integer", "real", "number"):
        number = float(value)
        return int(number) if number.is_integer() and "." not in str(value) else number
    return str(value)


def count_groups(dimensions: Sequence[Dimension]) -> list[Cell]:
    """Every non-empty group's count, unsuppressed: one GROUP BY statement.

    By topic, a contact counts once in each topic it receives (the unique subscription per
    contact and topic makes COUNT(*) count contacts); by attributes alone, once, if it receives
    any topic. A missing attribute and a JSON null are the same group (value None).
    """
    columns: list[ColumnElement[Any]] = []
    for dimension in dimensions:
        if dimension.kind == TOPIC:
            columns.append(Topic.slug)
        else:
            columns.extend(_attribute_columns(dimension.name))
    if any(d.kind == TOPIC for d in dimensions):
        statement = (
            select(*columns, func.count())
            .select_from(Subscription)
            .join(Contact, Contact.id == Subscription.contact_id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(gate.promotional_allowed(Contact.address_hash, Subscription.topic_id,
                                        subscription_state=Subscription.state))
        )
    else:
        # The contacts that receive some topic, as a subquery of its own (not correlated to
        # the outer contacts): the database can read it once, and the rule's condition sits
        # directly in the statement whose FROM holds the contact it is about.
        subscription, receiver = aliased(Subscription), aliased(Contact)
        receivers = (
            select(subscription.contact_id)
            .join(receiver, receiver.id == subscription.contact_id)
            .where(gate.promotional_allowed(receiver.address_hash, subscription.topic_id,
                                        subscription_state=subscription.state))
        )
        statement = (
            select(*columns, func.count())
            .select_from(Contact)
            .where(Contact.id.in_(receivers))
        )
    rows = db.session.execute(statement.group_by(*columns)).all()
    # Rows are groups, not contacts: a missing attribute and a JSON null (two SQL groups)
    # are merged here.
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        values = iter(row[:-1])
        key = []
        for dimension in dimensions:
            if dimension.kind == TOPIC:
                key.append(next(values))
            else:
                json_type, value = next(values), next(values)
                key.append(_value(json_type, value))
        counts[tuple(key)] += row[-1]
    return [Cell(key, count) for key, count in counts.items()]


# -- suppression (over the groups, not the contacts) -------------------------------------------

def _lines(cells: Sequence[Cell], dimensions: int) -> list[list[int]]:
    """The sets of cells whose sum may be published elsewhere: in a report by two dimensions
    each row and each column (the report by one dimension shows their sums)."""
    if dimensions < 2:
        return []
    lines: list[list[int]] = []
    for axis in range(dimensions):
        by_value: dict[Any, list[int]] = defaultdict(list)
        for index, cell in enumerate(cells):
            by_value[_sortable(cell.key[axis])].append(index)
        lines.extend(by_value.values())
    return lines


def _gives_away(line: Iterable[int], cells: Sequence[Cell], withheld: set[int], k: int) -> bool:
    """Whether the sum of a line's withheld cells, known from its published sum, gives a
    withheld count away: exactly one withheld, or together fewer than k."""
    hidden = [cells[i].count for i in line if i in withheld]
    return bool(hidden) and (len(hidden) == 1 or sum(hidden) < k)


def _smallest_shown(line: Iterable[int], cells: Sequence[Cell], withheld: set[int]) -> int | None:
    shown = [i for i in line if i not in withheld]
    return min(shown, key=lambda i: (cells[i].count, _sort_key(cells[i].key))) if shown else None


def suppress(cells: Sequence[Cell], k: int, dimensions: int = 1) -> tuple[set[int], bool]:
    """Which cells to withhold (their indexes), and whether `other` and `total` may be shown.

    Every cell under k is withheld; then, while a line (the whole report, and in two dimensions
    each row and column) has a withheld sum that gives a count away, its smallest shown cell is
    withheld too. A row or column with nothing left to withhold stays as it is (its published
    sum then covers only withheld cells: no single one is told). When the whole report has
    nothing left to withhold, `other` and `total` are not shown.
    """
    withheld = {i for i, cell in enumerate(cells) if cell.count < k}
    lines = _lines(cells, dimensions)
    everything = list(range(len(cells)))
    totals_shown = True
    changed = True
    while changed:
        changed = False
        for line in lines:
            if _gives_away(line, cells, withheld, k):
                extra = _smallest_shown(line, cells, withheld)
                if extra is not None:
                    withheld.add(extra)
                    changed = True
        if totals_shown and _gives_away(everything, cells, withheld, k):
            extra = _smallest_shown(everything, cells, withheld)
            if extra is None:
                totals_shown = False
            else:
                withheld.add(extra)
                changed = True
    return withheld, totals_shown


def _sortable(value: Any) -> Any:
    # True == 1 in Python: keep a boolean and a number apart as dictionary keys.
    return (type(value).__name__, value) if isinstance(value, bool) else value


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Groups in a stable order: by each value, None last, texts after numbers."""
    return tuple((value is None, isinstance(value, str), str(value) if isinstance(value, str)
                  else (float(value) if value is not None else 0.0)) for value in key)


def make_report(dimensions: Sequence[Dimension], k: int) -> Report:
    """Count the groups now and suppress them for k (not stored; see `audience_report`)."""
    cells = sorted(count_groups(dimensions), key=lambda c: _sort_key(c.key))
    withheld, totals_shown = suppress(cells, k, len(dimensions))
    other = sum(cells[i].count for i in withheld)
    total = sum(cell.count for cell in cells)
    return Report(tuple(dimensions), k,
                  [cell for i, cell in enumerate(cells) if i not in withheld],
                  other if totals_shown else None, total if totals_shown else None)


# -- one report a day ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DailyReport:
    """The answer of the day for a grouping, and when it was computed."""

    answer: dict[str, Any]
    computed_at: dt.datetime


def audience_report(dimensions: Sequence[Dimension], *, now: dt.datetime | None = None,
                    ) -> DailyReport:
    """The day's report for `dimensions`: the stored one, or computed now and stored.

    Flushes; the caller commits. Two processes computing the first report of a day at once
    both store with ON CONFLICT DO NOTHING and both answer the stored (the first) one, so
    every answer of a day is the same. Reports of earlier days are deleted then.
    """
    now = now or utcnow()
    day = now.date()
    k = min_group()
    spec = ",".join(d.spec for d in dimensions)
    stored = _stored(day, spec, k)
    if stored is not None:
        return stored
    report = make_report(dimensions, k)
    table = AudienceReport.__table__
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(delete(table).where(table.c.day < day))
    db.session.execute(
        dialect.insert(table)
        .values(day=day, dimensions=spec, min_group=k, answer=report.as_json(), created_at=now)
        .on_conflict_do_nothing(index_elements=["day", "dimensions", "min_group"]))
    found = _stored(day, spec, k)
    assert found is not None  # stored above, by this request or a concurrent one
    return found


def _stored(day: dt.date, spec: str, k: int) -> DailyReport | None:
    table = AudienceReport.__table__
    row = db.session.execute(
        select(table.c.answer, table.c.created_at).where(
            table.c.day == day, table.c.dimensions == spec, table.c.min_group == k)
    ).first()
    return None if row is None else DailyReport(row.answer, row.created_at)
