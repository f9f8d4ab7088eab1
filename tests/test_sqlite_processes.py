"""SQLite the plain way (mailer.database.engine_options): several mailer processes write to one
SQLite file at once, web, worker and import alike, and none fails because another is writing.

Whatever database the suite runs on, these use a SQLite file of their own, migrated by the real
`flask db upgrade`, and real processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from mailer.database import truncate_sqlite_wal
from tests.processes import ROOT, flask_env
from tests.smtp_server import ScriptedSmtpServer

pytestmark = pytest.mark.slow

WEB_PROCESSES = 3
CONTACTS_EACH = 60
MAILS_EACH = 20
IMPORTED = 1_000

# A web process: the real app (wsgi.py, settings from the environment) answering requests
# through its WSGI test client. Each contact request reads (the topic, the address's marks)
# before it writes, the kind of transaction that fails when another process commits between
# its read and its write.
WEB = """
import json, sys
from wsgi import app

name, key, contacts, mails = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = app.test_client()
auth = {"Authorization": f"Bearer {key}"}
answers = {}
for i in range(max(contacts, mails)):
    if i < contacts:
        r = client.post("/api/v1/contacts", headers=auth, json={
            "email": f"{name}-{i}@example.com", "topics": ["news"], "source": "test"})
        answers[r.status_code] = answers.get(r.status_code, 0) + 1
    if i < mails:
        r = client.post("/api/v1/messages", headers=auth, json={
            "to": f"{name}-buyer{i}@example.com", "template": "receipt",
            "category": "transactional",
            "data": {"order_number": "A-1", "items": [], "total": "0"}})
        answers[r.status_code] = answers.get(r.status_code, 0) + 1
print(json.dumps(answers))
"""

SETUP = """
from wsgi import app
from mailer.extensions import db
from mailer.topics.services import create_topic
with app.app_context():
    create_topic("news", "News", "", False, True)
    db.session.commit()
"""


def run(env: dict[str, str], *args: str, script: str | None = None) -> str:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "flask",
                                                             "--app", "wsgi", *args]
    result = subprocess.run(command + (list(args) if script else []), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def count(database: Path, sql: str) -> int:
    connection = sqlite3.connect(database)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def test_web_worker_and_import_processes_write_to_one_sqlite_file_at_once(app, tmp_path):
    database = tmp_path / "shared.db"
    with ScriptedSmtpServer() as smtp:
        env = flask_env(app, MAILER_DATABASE_URL=f"sqlite:///{database}",
                        MAILER_SMTP_URL=smtp.url, MAILER_WORKER_BATCH="10",
                        MAILER_RATELIMIT_ENABLED="0")
        run(env, "db", "upgrade")
        run(env, script=SETUP)
        key = run(env, "mailer", "create-api-key", "processes").strip().splitlines()[-1]
        csv = tmp_path / "contacts.csv"
        csv.write_text("email,first_name\n" + "".join(
            f"imported{i}@example.com,Name{i}\n" for i in range(IMPORTED)))

        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "mailer",
                                   "worker"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        started = [subprocess.Popen([sys.executable, "-c", WEB, f"web{n}", key,
                                     str(CONTACTS_EACH), str(MAILS_EACH)],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
                   for n in range(WEB_PROCESSES)]
        started.append(subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "mailer", "import", str(csv),
             "--topic", "news", "--source", "shop signup 2025"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            outputs = [process.communicate(timeout=180) for process in started]
            for process, (_out, err) in zip(started, outputs, strict=True):
                assert process.returncode == 0, err
                assert "database is locked" not in err
            for out, _err in outputs[:WEB_PROCESSES]:
                answers = json.loads(out.strip().splitlines()[-1])
                assert answers == {"201": CONTACTS_EACH, "202": MAILS_EACH}, answers
            smtp.wait_for_messages(WEB_PROCESSES * MAILS_EACH, timeout=60)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            worker_output = worker.communicate(timeout=30)[0]
        assert worker.returncode == 0, worker_output
        assert "database is locked" not in worker_output
    assert count(database, "SELECT count(*) FROM contacts") == (
        WEB_PROCESSES * CONTACTS_EACH + IMPORTED)
    sent = count(database, "SELECT count(*) FROM messages WHERE status = 'sent'")
    assert sent == WEB_PROCESSES * MAILS_EACH


def test_the_log_is_emptied_after_an_erasure_even_while_another_connection_checkpoints(
        tmp_path):
    """SQLite answers a checkpoint busy at once, without waiting, while another connection's
    checkpoint runs (SQLite's automatic one, in another process): the one that must empty the
    log (after an erasure) tries again until it has."""
    database = str(tmp_path / "log.db")
    setup = sqlite3.connect(database)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")
    setup.commit()
    setup.close()
    engine = create_engine(f"sqlite:///{database}")
    stop = threading.Event()

    def checkpoint_all_the_time() -> None:
        other = sqlite3.connect(database)
        while not stop.is_set():
            other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        other.close()

    writer = sqlite3.connect(database)
    checkpointer = threading.Thread(target=checkpoint_all_the_time)
    checkpointer.start()
    try:
        for i in range(30):
            writer.execute("INSERT INTO t (v) VALUES (?)", (f"r{i}",))
            writer.commit()
            assert truncate_sqlite_wal(engine, wait_seconds=5)
            assert os.path.getsize(database + "-wal") == 0
    finally:
        stop.set()
        checkpointer.join()
        writer.close()
        engine.dispose()


def test_a_savepoint_that_reads_then_writes_waits_for_another_process_and_succeeds(tmp_path):
    """A savepoint (the services' way to catch a duplicate) is opened inside a write
    transaction: it waits for another process's write to commit, then reads and writes. Opened
    alone, it would read an older snapshot and its write would fail at once with "database
    is locked", which no busy timeout can wait out."""
    from mailer.database import configure_engine, engine_options

    database = tmp_path / "race.db"
    setup = sqlite3.connect(database)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    setup.commit()
    setup.close()
    url = f"sqlite:///{database}"
    engine = create_engine(url, **engine_options(url, {}))
    configure_engine(engine)
    other = subprocess.Popen([sys.executable, "-c", """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO t (v) VALUES ('other')")
print("holding", flush=True)
time.sleep(0.5)
c.execute("COMMIT")
""", str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "holding"
        with engine.connect() as connection:
            with connection.begin_nested():
                seen = connection.exec_driver_sql("SELECT count(*) FROM t").scalar()
                time.sleep(0.6)  # the other process has committed by now
                connection.exec_driver_sql("INSERT INTO t (v) VALUES ('mine')")
            connection.commit()
        assert seen == 1  # it waited for the other's commit before reading
        assert other.wait(10) == 0
        assert count(database, "SELECT count(*) FROM t") == 2
    finally:
        other.stdout.close()
        engine.dispose()
