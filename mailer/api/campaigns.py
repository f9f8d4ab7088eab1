"""/api/v1/campaigns: create, list, schedule, pause, resume, cancel, test, counts."""

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
from mailer.campaigns import services as campaigns
from mailer.campaigns.models import Campaign
from mailer.extensions import db

URL_PREFIX = "/campaigns"
blp = Blueprint("campaigns", __name__, description="Campaigns to a topic's subscribers")

SECURITY = [{"bearerAuth": []}]


class CampaignCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    topic = fields.String(required=True, validate=validate.Length(min=1, max=64))
    template = fields.String(required=True, validate=validate.Length(min=1, max=100))
    data = fields.Dict(keys=fields.String(), load_default=dict)
    segment = fields.Dict(
        keys=fields.String(), load_default=dict,
        metadata={"description": 'narrows the subscribers: {"attributes": {"country": "DE"}}'},
    )


class ScheduleSchema(StrictSchema):
    send_at = fields.AwareDateTime(
        load_default=None, allow_none=True,
        metadata={"description": "ISO 8601 with a time zone offset; omitted = now"},
    )


class CampaignSchema(ma.Schema):
    id = fields.String(attribute="public_id")
    name = fields.String()
    topic = fields.Function(lambda c: c.topic.slug)
    template = fields.String()
    data = fields.Dict()
    segment = fields.Dict()
    status = fields.String()
    send_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    stats = fields.Function(
        campaigns.stats,
        metadata={"description": "counts only: recipients, queued, sent, deferred, failed, "
                                 "suppressed, cancelled, unsubscribed"},
    )


CAMPAIGN_PATH = {404: "`campaign_not_found`: no campaign has that id."}
TRANSITION = {409: "`invalid_transition`: the campaign's status does not allow this "
                   "(e.g. resuming a finished campaign)."}


@blp.route("")
class CampaignCollection(MethodView):
    @require_scope("campaigns:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(CampaignCreateSchema)
    @blp.response(201, CampaignSchema)
    @errors(blp, KEYED, JSON_BODY, RENDER, CATEGORY)
    def post(self, body: dict[str, Any]) -> Campaign:
        """Create a draft campaign; its template must render with its data."""
        campaign = campaigns.create(body["name"], body["topic"], body["template"], body["data"],
                                    body["segment"])
        db.session.commit()
        return campaign

    @require_scope("campaigns:read")
    @blp.doc(security=SECURITY)
    @blp.response(200, CampaignSchema(many=True))
    @errors(blp, KEYED)
    def get(self) -> list[Campaign]:
        """The latest 100 campaigns, newest first."""
        return campaigns.list_campaigns()


@blp.route("/<campaign_id>")
class CampaignItem(MethodView):
    @require_scope("campaigns:read")
    @blp.doc(security=SECURITY)
    @blp.response(200, CampaignSchema)
    @errors(blp, KEYED, CAMPAIGN_PATH)
    def get(self, campaign_id: str) -> Campaign:
        """A campaign with its counts."""
        return campaigns.get(campaign_id)


@blp.route("/<campaign_id>/schedule")
class CampaignSchedule(MethodView):
    @require_scope("campaigns:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(ScheduleSchema)
    @blp.response(200, CampaignSchema)
    @errors(blp, KEYED, JSON_BODY, CAMPAIGN_PATH, TRANSITION)
    def post(self, body: dict[str, Any], campaign_id: str) -> Campaign:
        """Schedule a draft (or move a scheduled one); no send_at means now."""
        campaign = campaigns.schedule(campaigns.get(campaign_id), body["send_at"])
        db.session.commit()
        return campaign


def _action(name: str, doc: str) -> type[MethodView]:
    action = getattr(campaigns, name)

    class CampaignAction(MethodView):
        @require_scope("campaigns:write")
        @blp.doc(security=SECURITY, summary=doc)
        @blp.response(200, CampaignSchema)
        @errors(blp, KEYED, CAMPAIGN_PATH, TRANSITION)
        def post(self, campaign_id: str) -> Campaign:
            campaign = action(campaigns.get(campaign_id))
            db.session.commit()
            return campaign

    CampaignAction.__name__ = f"Campaign{name.title()}"
    return CampaignAction


for _name, _doc in (("pause", "Stop new deliveries (within seconds); resume goes on"),
                    ("resume", "Go on after a pause, with no address mailed twice"),
                    ("cancel", "Cancel; what was not handed to SMTP is cancelled")):
    blp.route(f"/<campaign_id>/{_name}")(_action(_name, _doc))


class TestSendSchema(StrictSchema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=254))


class TestSentSchema(ma.Schema):
    id = fields.String()
    status = fields.String()


@blp.route("/<campaign_id>/test")
class CampaignTest(MethodView):
    @require_scope("campaigns:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(TestSendSchema)
    @blp.response(202, TestSentSchema)
    @errors(blp, KEYED, JSON_BODY, CAMPAIGN_PATH, RENDER)
    def post(self, body: dict[str, Any], campaign_id: str) -> dict[str, str]:
        """Send one test mail of the campaign, marked "[TEST]", to `to`."""
        message = campaigns.send_test(campaigns.get(campaign_id), body["to"],
                                      api_key_id=g.api_key.id)
        db.session.commit()
        return {"id": message.public_id, "status": message.status}
