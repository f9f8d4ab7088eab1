"""GET /metrics: figures after a real send through aiosmtpd, counts only, an optional token."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailer import addresses
from mailer.consent.models import ConsentSource
from mailer.extensions import db
from mailer.suppressions import services as suppressions
from mailer.suppressions.models import Reason
from tests.delivery.helpers import run_worker_until_idle
from tests.processes import ROOT, flask_env, spawn_flask
from tests.smtp_server import ScriptedSmtpServer

RECEIPT = {"order_number": "A-17", "items": [{"qty": 1, "name": "Gitarre", "price": "€399"}],
           "total": "€399"}


@pytest.fixture
def smtp():
    with ScriptedSmtpServer() as server:
        yield server


def scrape(client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def send_receipt(client, auth, to: str):
    return client.post("/api/v1/messages", headers=auth, json={
        "to": to, "template": "receipt", "data": RECEIPT, "category": "transactional"})


def test_a_scrape_after_a_real_send_counts_it(app, client, auth, smtp):
    before = scrape(client)
    accepted = send_receipt(client, auth, "buyer@example.com")
    assert accepted.status_code == 202
    waiting = scrape(client)
    assert value(waiting, "mailer_queue_depth", status="queued") == 1
    assert value(waiting, "mailer_messages", category="transactional", status="queued") == 1

    run_worker_until_idle(app, smtp.url, until_all_final=True)
    assert len(smtp.messages) == 1
    after = scrape(client)
    assert value(after, "mailer_queue_depth", status="queued") == 0
    assert value(after, "mailer_messages", category="transactional", status="sent") == 1
    # The worker ran in this process: its SMTP latency is in this process's histogram.
    sends = value(after, "mailer_smtp_send_seconds_count", outcome="sent")
    assert sends == value(before, "mailer_smtp_send_seconds_count", outcome="sent") + 1
    assert value(after, "mailer_smtp_send_seconds_bucket", outcome="sent", le="+Inf") == sends


def test_gate_refusals_are_counted_by_reason_and_no_label_holds_an_address(app, client, auth):
    suppressions.suppress(addresses.hash_of("gone@example.com"), Reason.BOUNCED,
                          source=ConsentSource.ADMIN)
    db.session.commit()
    before = scrape(client)
    assert send_receipt(client, auth, "gone@example.com").status_code == 422
    after = scrape(client)
    key = {"stage": "accept", "reason": "bounced"}
    assert value(after, "mailer_gate_refusals_total", **key) == value(
        before, "mailer_gate_refusals_total", **key) + 1
    body = client.get("/metrics").get_data(as_text=True)
    assert "@" not in body and "gone" not in body


def test_a_metrics_token_is_asked_for_when_set(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "MAILER_METRICS_TOKEN", "scrape-secret")
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "mailer_" not in wrong.get_data(as_text=True)
    assert scrape(client, Authorization="Bearer scrape-secret")


# A scraping process of its own, as a gunicorn worker would be, in multiprocess mode.
SCRAPE = """
import json, wsgi
print(json.dumps(wsgi.app.test_client().get("/metrics").get_data(as_text=True)))
"""


def test_multiprocess_mode_shows_the_worker_process_figures_to_the_web(app, client, auth,
                                                                       smtp, tmp_path):
    """Web and worker share PROMETHEUS_MULTIPROC_DIR: a scrape of the web sees the worker's
    SMTP latency and the web's own gate refusals."""
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert send_receipt(client, auth, "buyer@example.com").status_code == 202
    worker = spawn_flask(app, "mailer", "worker", MAILER_SMTP_URL=smtp.url, **shared)
    try:
        import time

        deadline = time.monotonic() + 60
        while not smtp.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        assert smtp.messages, "the worker sent nothing"
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output
    scraped = subprocess.run([sys.executable, "-c", SCRAPE], cwd=ROOT,
                             env=flask_env(app, **shared), capture_output=True, text=True,
                             timeout=120)
    assert scraped.returncode == 0, scraped.stderr
    figures = samples(json.loads(scraped.stdout.strip().splitlines()[-1]))
    assert value(figures, "mailer_smtp_send_seconds_count", outcome="sent") == 1
    assert value(figures, "mailer_messages", category="transactional", status="sent") == 1
