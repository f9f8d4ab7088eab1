"""GET /api/v1/reports/audience on a real database: counts in SQL, k, secondary suppression,
one report a day. Run on SQLite and on PostgreSQL (MAILER_TEST_DATABASE_URL)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.reports import services as reports
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.conftest import key_with

_numbers = itertools.count()


def subscribers(count: int, topics: list[str], **attributes) -> list[str]:
    """`count` new contacts subscribed to `topics` (single opt-in), with `attributes`."""
    made = []
    for _ in range(count):
        email = f"reader{next(_numbers)}@example.com"
        contacts.upsert(email, topics=topics, attributes=attributes or None)
        made.append(email)
    db.session.commit()
    return made


def audience(client, by: str, headers) -> dict:
    response = client.get(f"/api/v1/reports/audience?by={by}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def reader():
    return key_with("reports:read")


@pytest.fixture
def topics(make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("deals", double_opt_in=False)
    make_topic("rare", double_opt_in=False)


def test_groups_just_over_k_are_shown_and_just_under_are_withheld_with_secondary(
        client, reader, topics):
    subscribers(11, ["news"])  # k + 1
    subscribers(10, ["deals"])  # k
    subscribers(9, ["rare"])  # k - 1: withheld, and alone it would be `other`
    answer = audience(client, "topic", reader)
    assert answer["by"] == ["topic"] and answer["min_group"] == 10
    # The one group under k takes the next smallest (deals, 10) with it: other = 19.
    assert answer["groups"] == [{"key": {"topic": "news"}, "count": 11}]
    assert answer["other"] == 19 and answer["total"] == 30
    assert set(answer) == {"by", "min_group", "groups", "other", "total"}


def test_two_groups_under_k_that_together_reach_k_are_other(client, reader, topics):
    subscribers(12, ["news"], country="DE")
    subscribers(6, ["news"], country="FR")
    subscribers(5, ["news"], country="AT")
    answer = audience(client, "attribute:country", reader)
    assert answer["groups"] == [{"key": {"country": "DE"}, "count": 12}]
    assert answer["other"] == 11 and answer["total"] == 23


def test_a_report_with_only_small_groups_shows_no_other_and_no_total(client, reader, topics):
    subscribers(4, ["news"])
    answer = audience(client, "topic", reader)
    assert answer == {"by": ["topic"], "min_group": 10, "groups": [], "other": None,
                      "total": None}


def test_only_contacts_a_campaign_would_reach_are_counted(client, reader, make_topic):
    make_topic("news", double_opt_in=False)
    make_topic("letters", double_opt_in=True)
    counted = subscribers(10, ["news"], country="DE")
    subscribers(3, ["letters"], country="DE")  # pending: not counted
    # A bounced and a complained address (marks refusing promotional mail): not counted.
    for email in counted[:2]:
        suppressions.suppress(addresses.hash_of(email), Reason.BOUNCED,
                              source=ConsentSource.BOUNCE)
    db.session.commit()
    assert reports.count_groups(reports.parse_dimensions("attribute:country")) == [
        reports.Cell(("DE",), 8)]
    assert reports.count_groups(reports.parse_dimensions("topic")) == [
        reports.Cell(("news",), 8)]


def test_attribute_values_keep_their_json_type_and_missing_is_null(client, reader, topics):
    subscribers(10, ["news"], vip=True, visits=3)
    subscribers(10, ["news"], vip=False, visits=3)
    subscribers(5, ["news"], visits=4)
    subscribers(5, ["news"], vip=None, visits=4)  # JSON null and unset: one group
    answer = audience(client, "attribute:vip", reader)
    assert answer["groups"] == [{"key": {"vip": False}, "count": 10},
                                {"key": {"vip": True}, "count": 10},
                                {"key": {"vip": None}, "count": 10}]
    answer = audience(client, "attribute:visits", reader)
    assert answer["groups"] == [{"key": {"visits": 3}, "count": 20},
                                {"key": {"visits": 4}, "count": 10}]


def test_topic_by_attribute_suppresses_each_row_and_column(client, reader, topics):
    for topic, counts in (("news", {"DE": 30, "FR": 3, "AT": 15}),
                          ("deals", {"DE": 20, "FR": 25, "AT": 12})):
        for country, count in counts.items():
            subscribers(count, [topic], country=country)
    answer = audience(client, "topic,attribute:country", reader)
    shown = {(g["key"]["topic"], g["key"]["country"]): g["count"] for g in answer["groups"]}
    # news/FR (3) is under k. The report by topic publishes the news row's sum (48), so news/FR
    # may not be its only withheld cell: news/AT (15, the row's smallest shown) goes too. The
    # FR and AT columns then each had one withheld cell: deals/FR and deals/AT follow.
    assert shown == {("deals", "DE"): 20, ("news", "DE"): 30}
    assert answer["other"] == 55 and answer["total"] == 105


def test_one_report_a_day_whatever_joins_meanwhile(client, reader, topics):
    subscribers(10, ["news"])
    first = client.get("/api/v1/reports/audience?by=topic", headers=reader)
    subscribers(1, ["news"])
    again = audience(client, "topic", reader)
    assert again == first.get_json()
    assert again["groups"] == [{"key": {"topic": "news"}, "count": 10}]
    assert first.headers["Last-Modified"]
    # The next day's report counts anew, and the older day's is dropped.
    tomorrow = reports.utcnow() + dt.timedelta(days=1)
    daily = reports.audience_report(reports.parse_dimensions("topic"), now=tomorrow)
    db.session.commit()
    assert daily.answer["groups"] == [{"key": {"topic": "news"}, "count": 11}]
    from mailer.reports.models import AudienceReport
    assert db.session.query(AudienceReport).count() == 1


def test_min_group_setting(app, client, reader, topics):
    subscribers(6, ["news"])
    subscribers(5, ["deals"])
    app.config["MAILER_REPORT_MIN_GROUP"] = 5
    try:
        answer = audience(client, "topic", reader)
    finally:
        app.config["MAILER_REPORT_MIN_GROUP"] = 10
    assert answer["min_group"] == 5
    assert answer["groups"] == [{"key": {"topic": "deals"}, "count": 5},
                                {"key": {"topic": "news"}, "count": 6}]
    assert answer["other"] == 0 and answer["total"] == 11


@pytest.mark.parametrize("by", ["", "country", "attribute:", "attribute:a b", "topic,topic",
                                "topic,attribute:a,attribute:b", "attribute:a\"b"])
def test_bad_groupings_are_422(client, reader, by):
    response = client.get("/api/v1/reports/audience", query_string={"by": by}, headers=reader)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"


def test_the_scope_is_needed_and_the_endpoint_is_documented(client, topics):
    assert client.get("/api/v1/reports/audience?by=topic").status_code == 401
    other = key_with("contacts:read")
    assert client.get("/api/v1/reports/audience?by=topic", headers=other).status_code == 403
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/reports/audience"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"401", "403", "422"} <= set(operation["responses"])


def test_k_under_5_is_refused_at_start():
    from config import ConfigError, TestConfig

    with pytest.raises(ConfigError, match="MAILER_REPORT_MIN_GROUP must be at least 5"):
        TestConfig.from_env({"MAILER_REPORT_MIN_GROUP": "4"})
    assert TestConfig.from_env({"MAILER_REPORT_MIN_GROUP": "5"}).MAILER_REPORT_MIN_GROUP == 5
    assert TestConfig.from_env({}).MAILER_REPORT_MIN_GROUP == 10


def test_a_report_is_one_counting_statement_however_many_contacts(client, reader, topics):
    from tests.sql_events import listening

    subscribers(25, ["news", "deals"], country="DE")
    statements: list[str] = []

    def keep(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    with listening(keep):
        audience(client, "topic,attribute:country", reader)
    counting = [s for s in statements if "GROUP BY" in s.upper()]
    assert len(counting) == 1
    assert not any("FROM contacts" in s and "GROUP BY" not in s.upper()
                   and "audience_reports" not in s for s in statements), statements
