"""The `flask --app wsgi mailer ...` commands, run as an operator runs them."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select

from mailer.apikeys.models import ApiKey
from mailer.consent.models import ConsentEvent
from mailer.contacts.models import Contact
from mailer.extensions import db
from tests.processes import run_flask, spawn_flask


def test_create_api_key_prints_the_key_last_and_stores_only_its_hash(app, client):
    result = run_flask(app, "mailer", "create-api-key", "shop",
                       "--scope", "contacts:read", "--scope", "topics:read")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("mk_") and len(key) >= 43 + 3
    row = db.session.scalar(select(ApiKey).where(ApiKey.name == "shop"))
    assert row.scopes == ["contacts:read", "topics:read"]
    assert key not in repr(row.__dict__)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/topics", headers=headers).status_code == 200
    denied = client.post("/api/v1/topics", json={"slug": "x", "name": "X"}, headers=headers)
    assert denied.status_code == 403


def test_create_api_key_without_scope_gets_every_scope_but_inbound(app, client):
    """A key made without --scope cannot hand in reports (they mark addresses): a calling
    service that only sends mail must not be able to stop someone's mail (issue 15)."""
    from mailer.apikeys.services import SCOPES

    result = run_flask(app, "mailer", "create-api-key", "all")
    assert result.returncode == 0, result.stderr
    row = db.session.scalar(select(ApiKey).where(ApiKey.name == "all"))
    assert sorted(row.scopes) == sorted(set(SCOPES) - {"inbound:write"})
    key = result.stdout.strip().splitlines()[-1]
    report = client.post("/api/v1/inbound", data=b"From: a@example.com\r\n\r\nx",
                         headers={"Authorization": f"Bearer {key}",
                                  "Content-Type": "message/rfc822"})
    assert report.status_code == 403

    named = run_flask(app, "mailer", "create-api-key", "bounces", "--scope", "inbound:write")
    assert named.returncode == 0, named.stderr
    row = db.session.scalar(select(ApiKey).where(ApiKey.name == "bounces"))
    assert row.scopes == ["inbound:write"]


def test_create_api_key_refuses_an_unknown_scope(app):
    result = run_flask(app, "mailer", "create-api-key", "bad", "--scope", "everything")
    assert result.returncode == 2
    assert "everything" in result.stderr
    assert db.session.scalar(select(ApiKey)) is None


CSV = """email,country,first_name
ann@example.com,DE,Ann
not-an-address,FR,Bob
CAROL@Example.com,AT,Carol
,DE,Nobody
dan@example.com,DE,4111 1111 1111 1111
eve@example.com,"SE",Eve,extra
"""


def test_import_reports_bad_rows_by_line_and_imports_the_good_ones(app, tmp_path, make_topic):
    make_topic("news")  # double opt-in: an import carries consent given elsewhere
    path = tmp_path / "list.csv"
    path.write_text(CSV, encoding="utf-8")
    result = run_flask(app, "mailer", "import", str(path), "--topic", "news",
                       "--source", "spring fair 2026")
    assert result.returncode == 0, result.stderr
    assert "line 3:" in result.stderr  # not-an-address
    assert "line 5:" in result.stderr  # empty address
    assert "line 6:" in result.stderr and "card number" in result.stderr
    assert "line 7:" in result.stderr  # more fields than the header
    assert "line 2:" not in result.stderr and "line 4:" not in result.stderr
    assert result.stdout.splitlines()[-1] == (
        "imported 6 rows: created 2, updated 0, already subscribed 0, kept unsubscribed 0, "
        "kept marked 0, bad rows 4")
    assert "4111" not in result.stdout + result.stderr

    contacts = {c.email: c for c in db.session.scalars(select(Contact))}
    assert sorted(contacts) == ["ann@example.com", "carol@example.com"]
    assert contacts["ann@example.com"].attributes == {"country": "DE", "first_name": "Ann"}
    assert {s.topic.slug: s.state for s in contacts["carol@example.com"].subscriptions} == {
        "news": "subscribed"
    }
    events = db.session.scalars(select(ConsentEvent)).all()
    assert {(e.source, e.note, e.state) for e in events} == {
        ("import", "spring fair 2026", "subscribed")
    }


def test_import_into_an_unknown_topic_fails_cleanly(app, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email\nann@example.com\n", encoding="utf-8")
    result = run_flask(app, "mailer", "import", str(path), "--topic", "nope", "--source", "x")
    assert result.returncode == 1
    assert "Unknown topic: nope" in result.stderr
    assert db.session.scalar(select(Contact)) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "header row"), ("name,country\nAnn,DE\n", "no 'email' column")],
)
def test_import_needs_an_email_column(app, tmp_path, make_topic, content, message):
    make_topic("news")
    path = tmp_path / "list.csv"
    path.write_text(content, encoding="utf-8")
    result = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "x")
    assert result.returncode == 1
    assert message in result.stderr


def test_import_shows_progress_and_a_summary_over_several_batches(app, tmp_path, make_topic):
    from mailer.contacts import importing

    make_topic("news")
    count = importing.BATCH_ROWS + 500
    rows = "\n".join(f"user{i}@example.com,{i}" for i in range(count))
    path = tmp_path / "big.csv"
    path.write_text("email,n\n" + rows + "\n", encoding="utf-8")
    result = run_flask(app, "mailer", "import", str(path), "--topic", "news", "--source", "crm")
    assert result.returncode == 0, result.stderr
    # Not a terminal: a line of progress, not a bar.
    assert f"imported {count} of {count} rows" in result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"imported {count} rows: created {count}, updated 0, already subscribed 0, "
        "kept unsubscribed 0, kept marked 0, bad rows 0")
    assert len(db.session.scalars(select(Contact.id)).all()) == count


@pytest.mark.parametrize(("name", "problem"),
                         [("", "must not be empty"), ("   ", "must not be empty"),
                          ("x" * 101, "must be at most 100 characters"),
                          ("shop\tkey", "must be one line of printable text")])
def test_create_api_key_refuses_a_bad_name_in_one_line(app, name, problem):
    result = run_flask(app, "mailer", "create-api-key", name)
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: the key's NAME {problem}."
    assert result.stdout == ""
    assert db.session.scalar(select(ApiKey)) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mailer_dev_logs_requests_without_the_client_ip_or_addresses(app):
    port, smtp_port = _free_port(), _free_port()
    process = spawn_flask(app, "mailer", "dev", "--port", str(port),
                          "--smtp-port", str(smtp_port))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        for path in ("/api/v1/contacts/devtest@example.com",
                     "/api/v1/contacts/devtest%40example.com/export",
                     "/unsubscribe?email=devtest@example.com"):
            # 401 without a key, 200 for the page: the log line is what counts.
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "GET /api/v1/contacts/<address> 401" in output, output
    assert "GET /api/v1/contacts/<address>/export 401" in output, output
    assert "GET /unsubscribe?<query>" in output, output
    assert "GET /healthz 200" in output, output
    assert "devtest" not in output
    assert not re.search(r"^127\.0\.0\.1 - - ", output, re.MULTILINE), output
