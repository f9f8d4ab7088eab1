"""The console's audience report: the API's report (the same day's counts) as a table and a
CSV download; and the embeddable signup form's snippet for a set of public topics."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Response, current_app, render_template, request

from mailer.admin.blueprint import blp
from mailer.errors import ValidationFailed
from mailer.extensions import db
from mailer.pages import embed
from mailer.reports import services as reports
from mailer.topics.services import list_topics

DEFAULT_BY = "topic"
KINDS = ("topic", "attribute")


def _by_from_form(args: Any) -> str:
    """The `by` of the form's fields (first and optional second dimension), or `by` itself."""
    if args.get("by"):
        return str(args["by"])
    parts = []
    for place in ("first", "second"):
        kind = args.get(place, "topic" if place == "first" else "")
        if kind == "topic":
            parts.append("topic")
        elif kind == "attribute":
            parts.append(f"attribute:{(args.get(f'{place}_attribute') or '').strip()}")
    return ",".join(parts) or DEFAULT_BY


def _report(by: str) -> tuple[reports.DailyReport | None, str | None]:
    try:
        dimensions = reports.parse_dimensions(by)
    except ValidationFailed as exc:
        return None, " ".join(str(m) for m in exc.fields.get("by", [exc.message]))
    daily = reports.audience_report(dimensions)
    db.session.commit()
    return daily, None


@blp.get("/reports/audience")
def audience_report() -> tuple[str, int]:
    """The report for the chosen grouping (by topic when none is chosen)."""
    by = _by_from_form(request.args)
    daily, problem = _report(by)
    dimensions = by.split(",")
    form = {
        "first": "attribute" if dimensions[0].startswith("attribute:") else "topic",
        "first_attribute": dimensions[0].partition(":")[2],
        "second": (("attribute" if dimensions[1].startswith("attribute:") else "topic")
                   if len(dimensions) > 1 else ""),
        "second_attribute": dimensions[1].partition(":")[2] if len(dimensions) > 1 else "",
    }
    return render_template("admin/audience_report.html", by=by, daily=daily, problem=problem,
                           form=form, min_group=reports.min_group()), 422 if problem else 200


@blp.get("/reports/audience.csv")
def audience_report_csv() -> Response | tuple[str, int]:
    """The same report as CSV: a column per dimension and `count`, then the `other` and `total`
    rows (empty where the report withholds them)."""
    by = _by_from_form(request.args)
    daily, problem = _report(by)
    if daily is None:
        return render_template("admin/audience_report.html", by=by, daily=None,
                               problem=problem, form=None,
                               min_group=reports.min_group()), 422
    answer = daily.answer
    names = [spec.partition(":")[2] or spec for spec in answer["by"]]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*names, "count"])
    for group in answer["groups"]:
        writer.writerow([*(_cell(group["key"][name]) for name in names), group["count"]])
    for label in ("other", "total"):
        writer.writerow([f"({label})", *([""] * (len(names) - 1)), _cell(answer[label])])
    day = daily.computed_at.date().isoformat()
    filename = f"audience-{'-'.join(names)}-{day}.csv"
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


def _cell(value: Any) -> str:
    """A CSV cell: JSON's spelling for booleans and null (empty), text as it is; a text that a
    spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not isinstance(
        value, int | float) else text


# -- the embeddable signup form ----------------------------------------------------------------

@blp.get("/embed")
def embed_form() -> str:
    """The signup form's snippet for a set of public topics (chosen with checkboxes), to copy
    into a page of a site listed in MAILER_EMBED_ORIGINS."""
    public = list_topics(public_only=True)
    chosen_slugs = request.args.getlist("topics")
    chosen = [t for t in public if t.slug in chosen_slugs] or public
    return render_template(
        "admin/embed.html", topics=public, chosen=chosen,
        snippet=embed.snippet(chosen) if chosen else None,
        snippet_url=(f"{current_app.config['MAILER_BASE_URL']}/embed/subscribe?topics="
                     f"{','.join(t.slug for t in chosen)}"),
        origins=embed.embed_origins(),
        max_age_days=current_app.config["MAILER_EMBED_FORM_MAX_AGE"] / 86400)
