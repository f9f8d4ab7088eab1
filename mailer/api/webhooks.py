"""/api/v1/webhooks: register, list, read, delete endpoints and rotate their secrets."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import JSON_BODY, KEYED, errors
from mailer.api.fields import StrictSchema
from mailer.api.guards import require_scope
from mailer.extensions import db
from mailer.webhooks import services as webhooks
from mailer.webhooks.models import WebhookEndpoint

URL_PREFIX = "/webhooks"
blp = Blueprint("webhooks", __name__, description=(
    "Signed event notifications (message.sent, message.failed, message.suppressed, "
    "contact.subscribed, contact.unsubscribed, contact.bounced, contact.complained)"))

SECURITY = [{"bearerAuth": []}]
NOT_FOUND = {404: "`not_found`: no webhook has that id."}


class WebhookCreateSchema(StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata={
        "description": "In production: https:// and a public address (unless "
                       "MAILER_WEBHOOK_ALLOW_PRIVATE=1)"})
    events = fields.List(fields.String(validate=validate.OneOf(webhooks.EVENT_TYPES)),
                         required=True, validate=validate.Length(min=1, max=20))


class WebhookSchema(ma.Schema):
    id = fields.String(attribute="public_id")
    url = fields.String()
    events = fields.List(fields.String())
    created_at = fields.DateTime()


class WebhookSecretSchema(ma.Schema):
    id = fields.String()
    secret = fields.String(metadata={"description": "shown this once; signs every request"})


@blp.route("")
class WebhookCollection(MethodView):
    @require_scope("webhooks:write")
    @blp.doc(security=SECURITY)
    @blp.response(200, WebhookSchema(many=True))
    @errors(blp, KEYED)
    def get(self) -> list[WebhookEndpoint]:
        """Every webhook endpoint (never its secret)."""
        return webhooks.list_endpoints()

    @require_scope("webhooks:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookSecretSchema)
    @errors(blp, KEYED, JSON_BODY)
    def post(self, body: dict[str, Any]) -> dict[str, str]:
        """Register a URL for events; the answer holds its secret, shown only this once."""
        endpoint, secret = webhooks.create_endpoint(body["url"], body["events"])
        db.session.commit()
        return {"id": endpoint.public_id, "secret": secret}


@blp.route("/<string:webhook_id>")
class WebhookItem(MethodView):
    @require_scope("webhooks:write")
    @blp.doc(security=SECURITY)
    @blp.response(200, WebhookSchema)
    @errors(blp, KEYED, NOT_FOUND)
    def get(self, webhook_id: str) -> WebhookEndpoint:
        """One webhook endpoint (never its secret)."""
        return webhooks.get_endpoint(webhook_id)

    @require_scope("webhooks:write")
    @blp.doc(security=SECURITY)
    @blp.response(204, description="Deleted")
    @errors(blp, KEYED, NOT_FOUND)
    def delete(self, webhook_id: str) -> Response:
        """Delete the endpoint: it is sent nothing more, not even events already recorded."""
        webhooks.delete_endpoint(webhook_id)
        db.session.commit()
        return Response(status=204)


@blp.route("/<string:webhook_id>/rotate")
class WebhookRotation(MethodView):
    @require_scope("webhooks:write")
    @blp.doc(security=SECURITY)
    @blp.response(200, WebhookSecretSchema)
    @errors(blp, KEYED, NOT_FOUND)
    def post(self, webhook_id: str) -> dict[str, str]:
        """A new secret (shown this once); for 24 hours the old one signs too (two `v1=`)."""
        secret = webhooks.rotate_secret(webhook_id)
        db.session.commit()
        return {"id": webhook_id, "secret": secret}
