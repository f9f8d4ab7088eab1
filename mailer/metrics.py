"""GET /metrics: Prometheus text format, counts only (no address or token in any label).

Two kinds of figures:
- read from the database at each scrape, so they are right whatever process did the work:
  messages by category and status (`mailer_messages`; the queue's depth is its queued,
  deferred and sending rows, also as `mailer_queue_depth`), campaigns by status and the
  progress of each unfinished one;
- counted by the process that does the work: the consent gate's refusals by stage and reason,
  and the SMTP latency of each send (a histogram, in the worker). One process (`mailer dev`)
  shows its own; under gunicorn, and to see the worker's too, every process of one machine
  shares `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode; README, Deploying).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from mailer.extensions import db

# Counted where the work happens (gate.check_many, the worker's sender).
GATE_REFUSALS = Counter(
    "mailer_gate_refusals", "Mails the consent gate refused, by stage and reason.",
    ["stage", "reason"])
SMTP_SEND_SECONDS = Histogram(
    "mailer_smtp_send_seconds", "Time of one SMTP send (connect or reuse, the whole "
    "transaction), by outcome.", ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

QUEUED_STATUSES = ("queued", "deferred", "sending")


def record_gate_refusal(stage: str, reason: str) -> None:
    """Count one refusal of the consent gate (the reason is a fixed word, never an address)."""
    GATE_REFUSALS.labels(stage=stage, reason=reason).inc()


def observe_smtp_send(outcome: str, seconds: float) -> None:
    """Record how long one SMTP send took and how it ended (sent, temporary, permanent)."""
    SMTP_SEND_SECONDS.labels(outcome=outcome).observe(seconds)


class DatabaseCollector:
    """The figures read from the database at each scrape: three grouped counts, on indexed
    columns except the messages' one (a scan of the table; scrape every 30 s or slower)."""

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the names below never collide

    def collect(self) -> Iterator[Metric]:
        from mailer.campaigns.models import UNFINISHED, Campaign
        from mailer.messages.models import Message

        messages = GaugeMetricFamily(
            "mailer_messages", "Messages in the outbox by category and status (sent, failed, "
            "suppressed and cancelled are final).", labels=["category", "status"])
        depth = {status: 0 for status in QUEUED_STATUSES}
        rows = db.session.execute(select(Message.category, Message.status, func.count())
                                  .group_by(Message.category, Message.status))
        for category, status, count in rows:
            messages.add_metric([category, status], count)
            if status in depth:
                depth[status] += count
        yield messages
        queue = GaugeMetricFamily("mailer_queue_depth", "Messages waiting or being sent, by "
                                  "status.", labels=["status"])
        for status, count in depth.items():
            queue.add_metric([status], count)
        yield queue

        campaigns = GaugeMetricFamily("mailer_campaigns", "Campaigns by status.",
                                      labels=["status"])
        for status, count in db.session.execute(
                select(Campaign.status, func.count()).group_by(Campaign.status)):
            campaigns.add_metric([status], count)
        yield campaigns

        unfinished = select(Campaign.id).where(Campaign.status.in_(UNFINISHED)).scalar_subquery()
        progress = GaugeMetricFamily(
            "mailer_campaign_messages", "Messages of each unfinished campaign by status "
            "(its progress: sent and other final ones against the total).",
            labels=["campaign_id", "status"])
        for campaign_id, status, count in db.session.execute(
                select(Message.campaign_id, Message.status, func.count())
                .where(Message.campaign_id.in_(unfinished))
                .group_by(Message.campaign_id, Message.status)):
            progress.add_metric([str(campaign_id), status], count)
        yield progress


def _authorized() -> bool:
    token = current_app.config.get("MAILER_METRICS_TOKEN")
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def metrics() -> Response:
    """The Prometheus exposition: this process's (or, in multiprocess mode, every process's)
    counters and histograms, then the database's figures."""
    if not _authorized():
        return Response("Authorization: Bearer <MAILER_METRICS_TOKEN> required\n", status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                        mimetype="text/plain")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        processes = CollectorRegistry()
        MultiProcessCollector(processes, path=directory)
    else:
        processes = REGISTRY
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    body = generate_latest(processes) + generate_latest(database)
    return Response(body, content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def register(app: Flask) -> None:
    """Serve GET /metrics."""
    app.add_url_rule("/metrics", "metrics", metrics)
