"""Log lines as an operator's collector reads them: the real output of a web process and of a
worker, each line parsed as JSON, none holding an address, a token or a path with one."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.processes import LIMITED_APP_CONFIG, ROOT, spawn_flask
from tests.smtp_server import ScriptedSmtpServer

ADDRESS = "secret.person@example.com"

# The web app in a process of its own (its log output is what is tested), on a SQLite file of
# its own, with JSON logs; it prints the tokens it used and each response's status and
# X-Request-ID as its last line.
WEB = LIMITED_APP_CONFIG + """
import flask_migrate
from sqlalchemy import text
config.MAILER_LOG_FORMAT = "json"
config.MAILER_RATELIMIT_ENABLED = False
app = create_app(config)

@app.route("/explode/<email>")
def explode(email):
    from mailer.extensions import db
    # A database error with the address as a bound value: hide_parameters keeps it out.
    db.session.execute(text("SELECT no_such_column FROM contacts WHERE email = :e"), {"e": email})

with app.app_context():
    flask_migrate.upgrade()
    from mailer import addresses
    from mailer.apikeys import services as apikeys
    from mailer.extensions import db
    from mailer.messages.compose import preferences_token, unsubscribe_token
    _row, key = apikeys.issue("log-test")
    db.session.commit()
    auth = {"Authorization": "Bearer " + key}
    token = unsubscribe_token(addresses.hash_of(sys.argv[2]), None)
    preferences = preferences_token(addresses.hash_of(sys.argv[2]))
email = sys.argv[2]
client = app.test_client()
answers = []
def call(method, path, **kwargs):
    response = client.open(path, method=method, **kwargs)
    answers.append([method, response.status_code, response.headers.get("X-Request-ID")])
call("POST", "/api/v1/contacts", json={"email": email, "topics": []}, headers=auth)
call("GET", "/api/v1/contacts/" + email, headers=auth)
call("PATCH", "/api/v1/contacts/" + email, json={"attributes": {"x": "1"}}, headers=auth)
call("GET", "/api/v1/contacts/nobody." + email, headers=auth)
call("GET", "/unsubscribe/" + token)
call("POST", "/unsubscribe/" + token, data={"List-Unsubscribe": "One-Click"})
call("GET", "/preferences/" + preferences)
call("GET", "/confirm/" + token)
call("GET", "/no/such/page/" + email)
call("GET", "/healthz", headers={"X-Request-ID": "proxy-given-id-123"})
call("GET", "/explode/" + email)
print(json.dumps({"tokens": [token, preferences], "key": key, "answers": answers}))
"""


def parse_lines(output: str) -> list[dict]:
    """Every line as a JSON object (a line that is none fails the test)."""
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict) and entry.get("timestamp") and entry.get("level")
        assert "message" in entry
        parsed.append(entry)
    return parsed


def test_web_log_lines_are_json_with_request_ids_and_hold_no_address_or_token(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WEB, str(tmp_path / "logs.db"), ADDRESS],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    (token, preferences), key = outcome["tokens"], outcome["key"]
    answers = outcome["answers"]
    assert [status for _m, status, _id in answers] == [
        201, 200, 200, 404, 200, 200, 200, 400, 404, 200, 500], answers

    entries = parse_lines(result.stderr)
    # Nothing that names the person or could act for them, in any field of any line.
    for secret in (ADDRESS, "secret.person", token, token[:20], preferences, key):
        assert secret not in result.stderr, secret

    requests = [e for e in entries if e.get("event") == "request"]
    assert len(requests) == len(answers)  # one line per request, at INFO
    assert all(e["level"] == "INFO" for e in requests)
    assert [e.get("route") for e in requests] == [
        "/api/v1/contacts", "/api/v1/contacts/<email>", "/api/v1/contacts/<email>",
        "/api/v1/contacts/<email>", "/unsubscribe/<token>", "/unsubscribe/<token>",
        "/preferences/<token>", "/confirm/<token>", None, "/healthz", "/explode/<email>"]
    # The id each response returned is the id on its request's line.
    assert [e["request_id"] for e in requests] == [rid for _m, _s, rid in answers]
    assert len(set(rid for _m, _s, rid in answers)) == len(answers)
    assert answers[9][2] == "proxy-given-id-123"  # a proxy's own id is kept

    # The 500's error line carries its request's id, and no bound value of the SQL.
    errors = [e for e in entries if e["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0]["request_id"] == answers[10][2]
    assert "no_such_column" in errors[0]["exception"]
    assert "hidden due to hide_parameters" in errors[0]["exception"]


def test_the_worker_logs_one_json_line_per_delivery_without_the_address(app, client, auth):
    response = client.post("/api/v1/messages", headers=auth, json={
        "to": ADDRESS, "template": "receipt", "category": "transactional",
        "data": {"order_number": "A-1", "items": [], "total": "€0"}})
    assert response.status_code == 202, response.get_json()
    message_id = response.get_json()["id"]
    with ScriptedSmtpServer() as smtp:
        worker = spawn_flask(app, "mailer", "worker", MAILER_SMTP_URL=smtp.url,
                             MAILER_LOG_FORMAT="json")
        try:
            deadline = time.monotonic() + 60
            while not smtp.messages and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # the delivery's line is written right after the send
        finally:
            worker.terminate()
            output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output
    assert smtp.messages
    entries = parse_lines(output)
    deliveries = [e for e in entries if e.get("event") == "delivery"]
    assert len(deliveries) == 1, entries
    assert deliveries[0]["message_id"] == message_id and deliveries[0]["outcome"] == "sent"
    assert deliveries[0]["level"] == "INFO" and deliveries[0]["smtp_code"] == 250
    assert ADDRESS not in output and "secret.person" not in output


def test_text_logs_carry_the_ids_too(app, client, caplog):
    from mailer.logs import TextFormatter

    with caplog.at_level("INFO", logger="mailer.requests"):
        response = client.get("/healthz")
    record = next(r for r in caplog.records if getattr(r, "event", None) == "request")
    line = TextFormatter().format(record)
    assert "GET /healthz 200" in line
    assert f"request_id={response.headers['X-Request-ID']}" in line


def test_every_engine_hides_bound_values_from_its_errors(app):
    """Binds too (Flask-SQLAlchemy gives them only the extension's own engine options)."""
    from mailer.extensions import db

    assert db.engines and all(engine.hide_parameters for engine in db.engines.values())
