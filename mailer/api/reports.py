"""/api/v1/reports: the audience report, counts of groups of at least k contacts."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

import marshmallow as ma
from flask import Response, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import KEYED, errors
from mailer.api.fields import StrictSchema
from mailer.api.guards import require_scope
from mailer.extensions import db
from mailer.reports import services as reports

URL_PREFIX = "/reports"
blp = Blueprint("reports", __name__, description="Aggregate reports for sponsors: counts only")

SECURITY = [{"bearerAuth": []}]


class AudienceQuerySchema(StrictSchema):
    by = fields.String(
        required=True, validate=validate.Length(min=1, max=200),
        metadata={"description": "`topic`, `attribute:NAME`, or two of them comma-separated "
                                 "(e.g. `topic,attribute:country`)"},
    )


class GroupSchema(ma.Schema):
    key = fields.Dict(metadata={"description": 'a value per dimension, e.g. {"topic": "news", '
                                               '"country": "DE"}; null: the attribute is unset'})
    count = fields.Integer()


class AudienceReportSchema(ma.Schema):
    by = fields.List(fields.String())
    min_group = fields.Integer(metadata={"description": "k: no group smaller is shown"})
    groups = fields.List(fields.Nested(GroupSchema))
    other = fields.Integer(allow_none=True, metadata={
        "description": "the sum of the withheld groups; null when it would give one away"})
    total = fields.Integer(allow_none=True, metadata={
        "description": "the sum of every group (groups + other); null with other"})


@blp.route("/audience")
class AudienceReport(MethodView):
    @require_scope("reports:read")
    @blp.doc(security=SECURITY)
    @blp.arguments(AudienceQuerySchema, location="query")
    @blp.response(200, AudienceReportSchema)
    @errors(blp, KEYED, {422: "`validation_error`: `by` is not one or two of `topic` and "
                              "`attribute:NAME`."})
    def get(self, query: dict[str, Any]) -> Response:
        """Subscribed contacts per group, never a group smaller than k.

        Groups under `min_group` (k, `MAILER_REPORT_MIN_GROUP`) are withheld, and more are
        withheld where `other` or `total` would give one away. A grouping's report is computed
        once per UTC day; `Last-Modified` says when. By topic, a contact counts in each topic
        it receives."""
        dimensions = reports.parse_dimensions(query["by"])
        daily = reports.audience_report(dimensions)
        db.session.commit()
        response = jsonify(daily.answer)
        response.headers["Last-Modified"] = format_datetime(daily.computed_at, usegmt=True)
        return response
