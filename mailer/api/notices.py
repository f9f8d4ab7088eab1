"""/api/v1/notices: post a service notice (a policy revision) and read its progress."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import CATEGORY, JSON_BODY, KEYED, RENDER, errors
from mailer.api.fields import StrictSchema
from mailer.api.guards import require_scope
from mailer.consent.models import ConsentSource
from mailer.extensions import db
from mailer.notices import services as notices
from mailer.notices.models import Notice

URL_PREFIX = "/notices"
blp = Blueprint("notices", __name__,
                description="Service notices (policy revisions) to every contact the gate allows")

SECURITY = [{"bearerAuth": []}]


class NoticeCreateSchema(StrictSchema):
    template = fields.String(required=True, validate=validate.Length(min=1, max=100),
                             metadata={"description": "a template of category notice"})
    data = fields.Dict(keys=fields.String(), load_default=dict)
    policy_version = fields.String(
        required=True, validate=validate.Length(min=1, max=notices.POLICY_VERSION_LENGTH),
        metadata={"description": "each contact gets a policy version at most once, however "
                                 "often it is posted"})


class NoticePostedSchema(ma.Schema):
    id = fields.String(attribute="public_id")
    recipients = fields.Integer(metadata={
        "description": "contacts this posting queued a mail to (none that a posting of the "
                       "same version reached before)"})


class NoticeSchema(NoticePostedSchema):
    template = fields.String()
    policy_version = fields.String()
    created_at = fields.DateTime()
    stats = fields.Function(
        notices.stats,
        metadata={"description": "counts only: recipients, queued, sending, sent, deferred, "
                                 "failed, suppressed, cancelled"})


@blp.route("")
class NoticeCollection(MethodView):
    @require_scope("notices:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(NoticeCreateSchema)
    @blp.response(202, NoticePostedSchema)
    @errors(blp, KEYED, JSON_BODY, RENDER, CATEGORY)
    def post(self, body: dict[str, Any]) -> Notice:
        """Queue a notice template to every contact the consent gate's notice rule allows
        (subscribed to any topic, no address-wide mark) that has not had this policy_version;
        each gets a consent event naming the version."""
        notice = notices.post(body["template"], body["data"], body["policy_version"],
                              source=ConsentSource.API, created_by=f"api key {g.api_key.id}")
        db.session.commit()
        return notice


@blp.route("/<notice_id>")
class NoticeItem(MethodView):
    @require_scope("notices:write")
    @blp.doc(security=SECURITY)
    @blp.response(200, NoticeSchema)
    @errors(blp, KEYED, {404: "`notice_not_found`: no notice has that id."})
    def get(self, notice_id: str) -> Notice:
        """A notice with its progress (counts as a campaign's)."""
        return notices.get(notice_id)
