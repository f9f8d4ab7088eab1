"""API keys are looked up once per process every few seconds; a revocation shows within that."""

from __future__ import annotations

from sqlalchemy import update

from mailer.apikeys import services as apikeys
from mailer.apikeys.models import ApiKey
from mailer.database import utcnow
from mailer.extensions import db
from tests.sql_events import listening

TOPICS = "/api/v1/topics"


def issue() -> tuple[ApiKey, dict[str, str]]:
    row, key = apikeys.issue("cache-test")
    db.session.commit()
    return row, {"Authorization": f"Bearer {key}"}


def test_a_valid_key_is_read_from_the_database_once_per_period(client):
    _row, headers = issue()
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if "FROM api_keys" in statement:
            seen.append(statement)

    with listening(count):
        for _ in range(3):
            assert client.get(TOPICS, headers=headers).status_code == 200
    assert len(seen) == 1


def test_a_key_revoked_behind_the_process_s_back_is_refused_after_the_period(
    app, client, monkeypatch
):
    row, headers = issue()
    assert client.get(TOPICS, headers=headers).status_code == 200
    # Another process (or plain SQL) revokes it: this process learns of it within the period.
    db.session.execute(update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=utcnow())
                       .execution_options(synchronize_session=False))
    db.session.commit()
    assert client.get(TOPICS, headers=headers).status_code == 200
    now = apikeys.time.monotonic()
    monkeypatch.setattr(apikeys.time, "monotonic", lambda: now + apikeys.CACHE_SECONDS + 0.1)
    assert client.get(TOPICS, headers=headers).status_code == 401


def test_a_key_revoked_through_the_orm_here_is_refused_at_once(client):
    row, headers = issue()
    assert client.get(TOPICS, headers=headers).status_code == 200
    row.revoked_at = utcnow()
    db.session.commit()
    assert client.get(TOPICS, headers=headers).status_code == 401


def test_unknown_keys_are_never_cached(client):
    headers = {"Authorization": "Bearer mk_" + "x" * 43}
    assert client.get(TOPICS, headers=headers).status_code == 401
    assert client.get(TOPICS, headers=headers).status_code == 401
