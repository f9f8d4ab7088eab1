"""/api/v1/topics: list and create topics."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import JSON_BODY, KEYED, errors
from mailer.api.fields import StrictSchema, strict_boolean
from mailer.api.guards import require_scope
from mailer.extensions import db
from mailer.topics import services as topics
from mailer.topics.models import Topic

URL_PREFIX = "/topics"
blp = Blueprint("topics", __name__, description="Topics an address can opt in to")

SECURITY = [{"bearerAuth": []}]
SLUG_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"
SLUG_ERROR = "Lower-case letters, digits and dashes, 1-64."


def _check_slug(value: str) -> None:
    """One check, so one message per bad slug. A full match: with re.match, `$` would also
    take a slug followed by a final newline."""
    if re.fullmatch(SLUG_PATTERN, value) is None:
        raise ma.ValidationError(SLUG_ERROR)


class TopicCreateSchema(StrictSchema):
    slug = fields.String(
        required=True,
        validate=_check_slug,
        metadata={"pattern": f"^{SLUG_PATTERN}$", "description": SLUG_ERROR},
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    double_opt_in = strict_boolean(load_default=True)
    public = strict_boolean(load_default=False)
    welcome_template = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=100),
        metadata={"description": "a promotional template mailed once when an address's "
                                 "subscription to the topic is confirmed (double opt-in "
                                 "confirm, or single opt-in subscribe); null: none"})


class TopicSchema(ma.Schema):
    slug = fields.String()
    name = fields.String()
    description = fields.String()
    double_opt_in = fields.Boolean()
    public = fields.Boolean()
    welcome_template = fields.String(allow_none=True)
    created_at = fields.DateTime()


@blp.route("")
class TopicCollection(MethodView):
    @require_scope("topics:read")
    @blp.doc(security=SECURITY)
    @blp.response(200, TopicSchema(many=True))
    @errors(blp, KEYED)
    def get(self) -> list[Topic]:
        """Every topic, by slug."""
        return topics.list_topics()

    @require_scope("topics:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(TopicCreateSchema)
    @blp.response(201, TopicSchema)
    @errors(blp, KEYED, JSON_BODY, {409: "`topic_exists`: a topic has that slug already.",
                                    422: "`validation_error`: `welcome_template` is not a "
                                         "promotional template."})
    def post(self, body: dict[str, Any]) -> Topic:
        """Create a topic; a taken slug is 409 topic_exists."""
        topic = topics.create_topic(**body)
        db.session.commit()
        return topic
