"""/api/v1/referrals: Tell-a-Friend from the shop's own services."""

from __future__ import annotations

import functools
from typing import Any

import marshmallow as ma
from flask import after_this_request, g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import JSON_BODY, KEYED, errors
from mailer.api.fields import Email, StrictSchema
from mailer.api.guards import require_scope
from mailer.errors import ValidationFailed
from mailer.pages.mailing import after_the_answer
from mailer.referrals import services as referrals

URL_PREFIX = "/referrals"
blp = Blueprint("referrals", __name__, description="Tell-a-Friend")

SECURITY = [{"bearerAuth": []}]
# Fields the service names that sit inside `data` in the request body.
_IN_DATA = (referrals.ITEM_NAME, referrals.ITEM_URL)


class ItemSchema(StrictSchema):
    item_name = fields.String(
        required=True, validate=validate.Length(min=1, max=referrals.MAX_ITEM_NAME),
        metadata={"description": "the item's name, one line, no links (422 naming "
                                 "data.item_name otherwise)"},
    )
    item_url = fields.String(
        required=True, validate=validate.Length(min=1, max=referrals.MAX_ITEM_URL),
        metadata={"description": "http(s) link on the shop's origin (MAILER_SHOP_URL, else "
                                 "MAILER_BASE_URL)"},
    )


class ReferralSchema(StrictSchema):
    sender_email = Email(required=True, validate=validate.Length(min=1, max=254))
    sender_name = fields.String(
        load_default=None, allow_none=True,
        validate=validate.Length(min=1, max=referrals.MAX_SENDER_NAME),
        metadata={"description": f"shown to the friend, one line, no links (422 naming "
                                 f"sender_name otherwise); omitted or null: "
                                 f"\"{referrals.DEFAULT_SENDER_NAME}\""},
    )
    recipient_email = Email(required=True, validate=validate.Length(min=1, max=254),
                            metadata={"description": "the friend; not the sender's own address"})
    data = fields.Nested(ItemSchema, required=True)
    note = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=referrals.MAX_NOTE),
        metadata={"description": "plain text shown to the friend; no links"},
    )


class ReferralAcceptedSchema(ma.Schema):
    status = fields.String(metadata={"description": 'always "accepted"'})


def _as_request_fields(error: ValidationFailed) -> ValidationFailed:
    """Name the service's item fields where the request has them: inside `data`."""
    fields_out: dict[str, Any] = {}
    for name, messages in error.fields.items():
        if name in _IN_DATA:
            fields_out.setdefault("data", {})[name] = messages
        else:
            fields_out[name] = messages
    error.fields = fields_out
    return error


@blp.route("")
class ReferralCollection(MethodView):
    @require_scope("referrals:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(ReferralSchema)
    @blp.response(202, ReferralAcceptedSchema)
    @errors(blp, KEYED, JSON_BODY, {422: "`not_configured`: the sender or postal address "
                                         "setting the referral mail needs is missing."})
    def post(self, body: dict[str, Any]) -> Any:
        """Recommend an item to a friend: one mail, then the friend is quarantined.

        Always 202 `{"status": "accepted"}` for valid input, in the same time: the limits and
        the consent gate run after the answer, so whether the mail was queued or dropped (the
        sender's daily cap, one referral per friend per 30 days, a friend who may not receive
        it) is never told, not even by the answer's timing. The sender's daily cap
        (MAILER_REFERRAL_DAILY_CAP) counts per API key and sender address.
        """
        try:
            recommendation = referrals.prepare(body["sender_email"], body["sender_name"],
                                               body["recipient_email"], body["data"],
                                               body["note"])
        except ValidationFailed as exc:
            raise _as_request_fields(exc) from None
        # The limits, the gate and the queueing run once the answer has gone out: the same
        # answer, in the same time, whatever happens to the referral.
        work = functools.partial(referrals.send, recommendation,
                                 referrals.api_sender_key(g.api_key.id,
                                                          recommendation.sender_email))
        after_this_request(lambda response: after_the_answer(response, "referral", work))
        return {"status": "accepted"}, 202
