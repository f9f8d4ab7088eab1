"""Console: statistics, aggregate only (per campaign outcomes over time, per topic growth by
week). Nothing here is ever about one person."""

from __future__ import annotations

from flask import render_template

from mailer.admin import charts, services
from mailer.admin.blueprint import blp
from mailer.campaigns import services as campaigns
from mailer.campaigns import statistics as campaign_statistics
from mailer.topics import statistics as topic_statistics

# Colours told apart by people with the common colour-vision deficiencies (Okabe-Ito).
SENT, FAILED, SUPPRESSED = "#0072B2", "#D55E00", "#E69F00"
JOINED, LEFT = "#009E73", "#CC79A7"
WEEKS = 12


@blp.get("/statistics")
def statistics() -> str:
    """Every topic's weekly growth, and the latest campaigns' totals with links to charts."""
    growth = topic_statistics.weekly_growth(WEEKS)
    topic_charts = [
        (topic, charts.bar_chart(
            f"{topic.name}: subscriptions by week",
            f"New subscriptions and unsubscribes per week over the last {WEEKS} weeks.",
            [monday.strftime("%d %b") for monday in topic.weeks],
            [charts.Series("joined", JOINED, topic.subscribed),
             charts.Series("left", LEFT, topic.unsubscribed)]))
        for topic in growth]
    recent = campaigns.list_campaigns(limit=20)
    return render_template("admin/statistics.html", topic_charts=topic_charts,
                           campaigns=recent, counts=services.campaign_counts(recent))


@blp.get("/campaigns/<campaign_id>/statistics")
def campaign_statistics_page(campaign_id: str) -> str:
    """One campaign's sent, failed and suppressed messages over time, and its unsubscribes."""
    found = campaigns.get(campaign_id)
    timeline = campaign_statistics.timeline(found)
    labels = []
    if timeline.start is not None:
        from datetime import timedelta

        fmt = "%d %b %H:%M" if timeline.bucket_seconds < 86400 else "%d %b"
        labels = [(timeline.start + timedelta(seconds=timeline.bucket_seconds * (i + 1)))
                  .strftime(fmt) for i in range(timeline.buckets)]
    chart = charts.line_chart(
        f"{found.name}: outcomes over time",
        "Messages sent, failed and suppressed, counted up over time (UTC).", labels,
        [charts.Series("sent", SENT, timeline.cumulative["sent"]),
         charts.Series("failed", FAILED, timeline.cumulative["failed"]),
         charts.Series("suppressed", SUPPRESSED, timeline.cumulative["suppressed"])],
    ) if timeline.start is not None else None
    counts = campaigns.stats(found)
    return render_template("admin/campaign_statistics.html", campaign=found, chart=chart,
                           timeline=timeline, labels=labels, counts=counts)
