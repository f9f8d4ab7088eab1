"""Backup and restore as the README's *Backup and restore* says: a pg_dump of a running
install, restored into a fresh database with the same keys, serves on with every
suppression honoured; with another address-hash key it refuses to serve at all."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from mailer import addresses, create_app
from mailer.consent.models import ConsentSource
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.conftest import IN_CI, config_for_tests
from tests.processes import ROOT, flask_env, run_flask

pytestmark = pytest.mark.postgres

HASH_KEY = "backup-test-address-hash-key-0123456789abcdef"
NEWS = {"headline": "Winter sale", "intro": "Pianos half price."}
KEEP = "keep@example.com"
# Each address and how it came to refuse promotional mail.
UNSUBSCRIBED = "unsubscribed@example.com"  # through the API
ERASED = "erased@example.com"  # erased through the API: only its hash is left
MARKED = {  # marks as the worker, /inbound and Tell-a-Friend set them
    "bounced@example.com": (Reason.BOUNCED, ConsentSource.BOUNCE),
    "complained@example.com": (Reason.COMPLAINED, ConsentSource.COMPLAINT),
    "left@example.com": (Reason.LEFT, ConsentSource.PREFERENCES),
    "blocked@example.com": (Reason.BLOCKED, ConsentSource.ONE_CLICK),
    "friend@example.com": (Reason.QUARANTINED, ConsentSource.REFERRAL),
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"needs {name} (apt-get install postgresql-client)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def fresh_database(postgres_url: str, suffix: str) -> str:
    """An empty database beside the suite's (dropped first if a run left it)."""
    url = make_url(postgres_url)
    name = f"{url.database}_{suffix}"
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def libpq(url: str) -> str:
    """The SQLAlchemy URL as pg_dump and pg_restore take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(app: Flask, url: str, log: Path, hash_key: str = HASH_KEY) -> Iterator[httpx.Client]:
    """The service under gunicorn on `url` (as *Deploying* runs it, on a port of its own);
    its log goes to the file `log`."""
    port = free_port()
    with log.open("a") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
             "wsgi:app"],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env=flask_env(app, MAILER_DATABASE_URL=url, MAILER_ADDRESS_HASH_KEY=hash_key))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.2)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def send(service: httpx.Client, headers: dict[str, str], to: str) -> tuple[int, str | None]:
    """A promotional send to `to`: (status, the refusal's reason or None)."""
    response = service.post("/api/v1/messages", headers=headers, json={
        "to": to, "template": "newsletter", "data": NEWS, "category": "promotional",
        "topic": "news"})
    body = response.json()
    if response.status_code == 422:
        assert body["error"]["code"] == "recipient_suppressed", body
        return 422, body["error"].get("reason")
    return response.status_code, None


def everyone() -> list[str]:
    return [KEEP, UNSUBSCRIBED, ERASED, *MARKED]


def suppression_rows(url: str) -> list[tuple]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute("SELECT address_hash, reason, scope, topic_id FROM suppressions "
                            "ORDER BY address_hash, reason, scope").fetchall()


def test_a_restored_dump_honours_every_suppression_and_needs_the_address_hash_key(
        postgres_url, tmp_path: Path):
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    source = fresh_database(postgres_url, "backup_source")
    restored = fresh_database(postgres_url, "backup_restored")
    config = config_for_tests(source)
    config.MAILER_ADDRESS_HASH_KEY = HASH_KEY
    source_app = create_app(config)
    log = tmp_path / "gunicorn.log"

    # An install in use: schema, an API key, a topic, contacts, and every kind of mark.
    migrated = run_flask(source_app, "db", "upgrade", MAILER_DATABASE_URL=source,
                         MAILER_ADDRESS_HASH_KEY=HASH_KEY)
    assert migrated.returncode == 0, migrated.stderr
    made = run_flask(source_app, "mailer", "create-api-key", "shop",
                     MAILER_DATABASE_URL=source, MAILER_ADDRESS_HASH_KEY=HASH_KEY)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    with served(source_app, source, log) as service:
        assert service.post("/api/v1/topics", headers=headers, json={
            "slug": "news", "name": "News", "double_opt_in": False}).status_code == 201
        for address in everyone():
            response = service.post("/api/v1/contacts", headers=headers, json={
                "email": address, "topics": ["news"], "source": "checkout"})
            assert response.status_code == 201, response.text
        assert service.patch(f"/api/v1/contacts/{UNSUBSCRIBED}", headers=headers, json={
            "subscriptions": {"news": "unsubscribed"}}).status_code == 200
        assert service.delete(f"/api/v1/contacts/{ERASED}", headers=headers).status_code == 204
        with source_app.app_context():
            for address, (reason, channel) in MARKED.items():
                suppressions.suppress(addresses.hash_of(address), reason, source=channel)
            db.session.commit()
            db.engine.dispose()
        before = {address: send(service, headers, address) for address in everyone()}
    assert before[KEEP] == (202, None)
    assert all(status == 422 for address, (status, _) in before.items() if address != KEEP)

    # The backup: one pg_dump (custom format), restored into a fresh, empty database.
    dump = tmp_path / "mailer.dump"
    subprocess.run([pg_dump, "--format=custom", "--no-owner", "--file", str(dump),
                    libpq(source)], check=True, capture_output=True, timeout=120)
    subprocess.run([pg_restore, "--no-owner", "--exit-on-error", "--dbname", libpq(restored),
                    str(dump)], check=True, capture_output=True, timeout=120)
    assert suppression_rows(restored) == suppression_rows(source)
    assert len(suppression_rows(restored)) >= len(MARKED) + 1

    # The restored install, with the same keys: every refusal as before, the subscriber too.
    with served(source_app, restored, log) as service:
        after = {address: send(service, headers, address) for address in everyone()}
    assert after == before

    # With another address-hash key every suppression would be forgotten: the service
    # refuses to serve instead (the key's fingerprint is in the database).
    with served(source_app, restored, log, hash_key=HASH_KEY.replace("0", "1")) as service:
        response = service.post("/api/v1/messages", headers=headers, json={
            "to": UNSUBSCRIBED, "template": "newsletter", "data": NEWS,
            "category": "promotional", "topic": "news"})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_misconfigured"
