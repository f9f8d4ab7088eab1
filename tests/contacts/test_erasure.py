"""Erasure leaves no plaintext address anywhere, and the address stays suppressed by hash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from mailer import addresses
from mailer.consent.models import ConsentEvent
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason

ADDRESS = "erase.me.zq7@example.org"


def sqlite_files() -> list[Path]:
    database = Path(db.engine.url.database)
    return [p for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists()]


def raw_bytes() -> bytes:
    """The bytes of the database, WAL and shared-memory files, read by another process.

    Opening and closing the files in this process would drop SQLite's POSIX
    locks on them (closing any descriptor of a file releases all of the
    process's fcntl locks on it), which corrupts the suite's own connections.
    """
    paths = [str(path) for path in sqlite_files()]
    return subprocess.run(["cat", *paths], capture_output=True, check=True).stdout


def create(client, auth):
    response = client.post(
        "/api/v1/contacts",
        json={"email": ADDRESS, "topics": ["news", "deals"], "source": "checkout",
              "attributes": {"nickname": "zq7-erase", "country": "DE"}, "partner_sharing": True},
        headers=auth,
    )
    assert response.status_code == 201


def test_erased_address_is_nowhere_in_the_sqlite_files(client, auth, make_topic):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("reads the raw SQLite file; PostgreSQL erasure is covered by the API tests")
    make_topic("news")
    make_topic("deals", double_opt_in=False)
    create(client, auth)
    # Positive control: the plaintext really is on disk, in the main file and the WAL.
    with db.engine.connect() as connection:
        connection.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))
    client.patch(f"/api/v1/contacts/{ADDRESS}", json={"attributes": {"city": "Berlin"}},
                 headers=auth)
    assert ADDRESS.encode() in raw_bytes()
    assert b"zq7-erase" in raw_bytes()

    assert client.delete(f"/api/v1/contacts/{ADDRESS}", headers=auth).status_code == 204

    data = raw_bytes()
    assert ADDRESS.encode() not in data
    assert ADDRESS.split("@")[0].encode() not in data
    assert b"zq7-erase" not in data


def test_erasure_keeps_the_hash_suppressed_and_logs_only_the_erasure(client, auth, make_topic):
    make_topic("news")
    make_topic("deals", double_opt_in=False)
    create(client, auth)
    assert client.delete(f"/api/v1/contacts/{ADDRESS}", headers=auth).status_code == 204
    address_hash = addresses.hash_of(ADDRESS)
    assert suppressions.marks(address_hash) == {Reason.ERASED}
    events = db.session.scalars(select(ConsentEvent)).all()
    assert [(e.address_hash, e.state, e.contact_id) for e in events] == [
        (address_hash, "erased", None)
    ]
    assert db.session.scalar(select(func.count()).select_from(text("contacts"))) == 0
    assert client.get(f"/api/v1/contacts/{ADDRESS}", headers=auth).status_code == 404

    # Adding it again (a calling service does not know) never markets to it without its
    # own confirmation: even the single opt-in topic stays pending.
    again = client.post("/api/v1/contacts", json={"email": ADDRESS, "topics": ["deals"]},
                        headers=auth)
    assert again.get_json()["subscriptions"] == {"deals": "pending"}
