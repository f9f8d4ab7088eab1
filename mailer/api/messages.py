"""/api/v1/messages: send one mail or a batch, and follow its status."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import JSON_BODY, KEYED, RENDER, errors
from mailer.api.fields import StrictSchema
from mailer.api.guards import IDEMPOTENCY_HEADER, require_scope
from mailer.consent.gate import Category
from mailer.errors import MailerError, ValidationFailed
from mailer.extensions import db
from mailer.messages import services as messages
from mailer.messages.models import Message
from mailer.messages.services import Answer, SendRequest

URL_PREFIX = "/messages"
blp = Blueprint("messages", __name__, description="Sending mail and following its status")

SECURITY = [{"bearerAuth": []}]
MAX_BATCH = 500
SENDABLE = [Category.TRANSACTIONAL, Category.PROMOTIONAL]


class SendSchema(StrictSchema):
    to = fields.String(required=True, validate=validate.Length(min=1, max=254))
    template = fields.String(required=True, validate=validate.Length(min=1, max=100))
    data = fields.Dict(keys=fields.String(), load_default=dict)
    category = fields.String(required=True, validate=validate.OneOf(SENDABLE))
    topic = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))


# One instance for every request (webargs would build one per request from the class).
SEND_SCHEMA = SendSchema()


class BatchSchema(StrictSchema):
    messages = fields.List(
        fields.Raw(), required=True, validate=validate.Length(min=1, max=MAX_BATCH),
        metadata={"description": f"1 to {MAX_BATCH} messages, each as for POST /messages"},
    )


class AcceptedSchema(ma.Schema):
    id = fields.String()
    status = fields.String()


class BatchResultSchema(ma.Schema):
    results = fields.List(
        fields.Dict(),
        metadata={"description": 'in order: {"index", "status": 202, "id", "message_status"} '
                                 'or {"index", "status": 4xx, "error": {...}}'},
    )


class MessageSchema(ma.Schema):
    id = fields.String(attribute="public_id")
    status = fields.String()
    category = fields.String()
    template = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)


def _idempotency_key() -> str | None:
    return request.headers.get(IDEMPOTENCY_HEADER)


def _send(body: dict[str, Any]) -> Answer:
    message = messages.accept(
        SendRequest(to=body["to"], template=body["template"], data=body["data"],
                    category=Category(body["category"]), topic=body["topic"]),
        api_key_id=g.api_key.id,
    )
    return Answer(202, {"id": message.public_id, "status": message.status})


def _item_result(index: int, raw: Any) -> dict[str, Any]:
    """Accept one batch item inside its own savepoint; a refusal touches no other item."""
    try:
        body = SEND_SCHEMA.load(raw if isinstance(raw, dict) else {"_": raw})
        with db.session.begin_nested():
            answer = _send(body)
    except ma.ValidationError as exc:
        error = ValidationFailed(fields=exc.normalized_messages())
        return {"index": index, "status": error.status, "error": _error_body(error)}
    except MailerError as exc:
        return {"index": index, "status": exc.status, "error": _error_body(exc)}
    return {"index": index, "status": answer.status, "id": answer.body["id"],
            "message_status": answer.body["status"]}


def _error_body(error: MailerError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "fields": error.fields, **error.extra}


IDEMPOTENCY = {409: "`idempotency_key_reused`: the `Idempotency-Key` was used before with "
                    "another body."}


@blp.route("")
class MessageCollection(MethodView):
    @require_scope("messages:send")
    @blp.doc(security=SECURITY, parameters=[{
        "in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "repeat-safe key: the same key and body replay the first answer",
    }])
    @blp.arguments(SEND_SCHEMA)
    @blp.response(202, AcceptedSchema)
    @errors(blp, KEYED, JSON_BODY, RENDER, IDEMPOTENCY, {
        422: "`recipient_suppressed`: the consent gate refuses the recipient (`reason` says "
             "why: not_subscribed, bounced, complained, unsubscribed, erased, blocked)."})
    def post(self, body: dict[str, Any]) -> Any:
        """Queue one mail. A recipient the consent gate refuses: 422 recipient_suppressed."""
        answer = messages.idempotent(g.api_key.id, _idempotency_key(), request.get_json(),
                                     lambda: _send(body))
        db.session.commit()
        return answer.body, answer.status


@blp.route("/batch")
class MessageBatch(MethodView):
    @require_scope("messages:send")
    @blp.doc(security=SECURITY)
    @blp.arguments(BatchSchema())
    @blp.response(200, BatchResultSchema)
    @errors(blp, KEYED, JSON_BODY, IDEMPOTENCY)
    def post(self, body: dict[str, Any]) -> Any:
        """Queue many mails: one result per item, in order; a bad item sinks no other."""

        def produce() -> Answer:
            results = [_item_result(i, raw) for i, raw in enumerate(body["messages"])]
            return Answer(200, {"results": results})

        answer = messages.idempotent(g.api_key.id, _idempotency_key(), request.get_json(),
                                     produce)
        db.session.commit()
        return answer.body, answer.status


@blp.route("/<message_id>")
class MessageItem(MethodView):
    @require_scope("messages:send")
    @blp.doc(security=SECURITY)
    @blp.response(200, MessageSchema)
    @errors(blp, KEYED, {404: "`message_not_found`: no message has that id."})
    def get(self, message_id: str) -> Message:
        """A message's delivery status: queued, sending, sent, deferred, failed, suppressed or
        cancelled."""
        return messages.get(message_id)
