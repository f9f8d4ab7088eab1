"""/api/v1/inbound: bounces and complaints, handed in as the raw mail that carried them."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from mailer.api.docs import KEYED, errors
from mailer.api.guards import require_scope
from mailer.errors import UnsupportedMediaType as JsonUnsupportedMediaType
from mailer.extensions import db
from mailer.suppressions import reports

URL_PREFIX = "/inbound"
blp = Blueprint("inbound", __name__, description="Bounces and complaints")

SECURITY = [{"bearerAuth": []}]
# The raw mail as it arrived. message/rfc822 is its proper type; text/plain and
# application/octet-stream are what a pipe (`curl --data-binary @-`) or a mail
# provider's webhook relay sends when it does not know better; the body is read as
# mail whatever it says.
MEDIA_TYPES = ("message/rfc822", "message/global", "text/plain", "application/octet-stream")
_RAW_MAIL = {"schema": {"type": "string", "format": "binary"}}


class UnsupportedMediaType(JsonUnsupportedMediaType):
    """The JSON endpoints' 415, with the media types this one reads instead."""

    message = f"Send the raw mail with Content-Type {', '.join(MEDIA_TYPES)}."


class InboundOutcomeSchema(Schema):
    kind = fields.String(metadata={"enum": [k.value for k in reports.Kind]})
    action = fields.String(metadata={
        "enum": [a.value for a in reports.Action],
        "description": "suppressed: the address is now marked (bounced or complained)",
    })
    reason = fields.String(metadata={
        "enum": [v.value for v in reports.Verdict],
        "description": "the mark set, or why none was: policy (5.7.x), temporary, ...",
    })
    status = fields.String(allow_none=True,
                           metadata={"description": "the RFC 3463 status code, if any"})
    recipients = fields.Integer(metadata={"description": "addresses of ours it was matched to "
                                                         "(the one of the sent mail)"})


@blp.route("")
class Inbound(MethodView):
    @require_scope("inbound:write")
    @blp.doc(security=SECURITY, requestBody={
        "required": True,
        "description": "the raw RFC 5322 mail: a delivery status notification (RFC 3464), "
                       "another bounce, or an ARF feedback report (RFC 5965)",
        "content": {media_type: _RAW_MAIL for media_type in MEDIA_TYPES},
    })
    @blp.response(200, InboundOutcomeSchema)
    @errors(blp, KEYED, {
        413: "`payload_too_large`: the body is over 1 MB.",
        415: f"`unsupported_media_type`: send the mail as {', '.join(MEDIA_TYPES)}.",
        422: "`unrecognized_report`: the body is no bounce or complaint report; "
             "`no_recipient`: the report carries no Message-ID of mail this service sent "
             "(an address the report names is not enough, whether or not it was ever "
             "mailed).",
    })
    def post(self) -> reports.Outcome:
        """Hand in a bounce or a complaint; a hard bounce or a complaint suppresses the address.

        A hard bounce (5.1.x, 5.2.1) marks the address `bounced`, an ARF abuse report
        `complained`; a delay, a policy refusal (5.7.x) or another failure changes nothing.
        A report acts only on mail the service sent, found by our Message-ID in the enclosed
        original (or its headers, or a Message-ID line it quotes). A body that is no report:
        422 unrecognized_report; a report without such a Message-ID: 422 no_recipient, the
        same whether or not an address it names was ever mailed. Nothing of the report is
        stored. Needs the `inbound:write` scope, which a key gets only when it is named.
        """
        if request.mimetype not in MEDIA_TYPES:
            raise UnsupportedMediaType()
        outcome = reports.apply(reports.read_report(request.get_data(cache=False)))
        db.session.commit()
        return outcome
