"""/api/v1/contacts: create, read, change, export and erase contacts."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from mailer.api.docs import CONTACT_PATH, JSON_BODY, KEYED, errors
from mailer.api.fields import Email, StrictSchema, attributes_field, strict_boolean
from mailer.api.guards import require_scope
from mailer.consent import confirmation
from mailer.consent.models import SubscriptionState
from mailer.contacts import services as contacts
from mailer.contacts.models import Contact
from mailer.extensions import db

URL_PREFIX = "/contacts"
blp = Blueprint("contacts", __name__, description="Contacts and their per-topic consent")

SECURITY = [{"bearerAuth": []}]
NO_CONTACT = {404: "`contact_not_found`: no contact has that address."}
# Export and erasure find an address held by keyed hash alone too.
HELD = {404: "`contact_not_found`: nothing at all is held about the address: no contact, "
             "mark, consent event or mail."}


class ContactCreateSchema(StrictSchema):
    email = Email(required=True)
    topics = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=list,
        validate=validate.Length(max=100),
    )
    source = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=200),
        metadata={"description": "where consent was collected, e.g. 'checkout'"},
    )
    partner_sharing = strict_boolean(
        load_default=None,
        metadata={"description": "true only if the address opted in to partner sharing"},
    )
    attributes = attributes_field(load_default=None)


class ContactPatchSchema(StrictSchema):
    attributes = attributes_field()
    partner_sharing = strict_boolean()
    subscriptions = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.String(
            validate=validate.OneOf([SubscriptionState.SUBSCRIBED, SubscriptionState.UNSUBSCRIBED])
        ),
        metadata={"description": '{slug: "subscribed"|"unsubscribed"}'},
    )


class ContactSchema(ma.Schema):
    email = fields.String()
    attributes = fields.Dict()
    source = fields.String(allow_none=True)
    partner_sharing = fields.Boolean()
    subscriptions = fields.Method(
        "_subscriptions",
        metadata={"description": '{slug: "pending"|"subscribed"|"unsubscribed"}'},
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    def _subscriptions(self, contact: Contact) -> dict[str, str]:
        return {s.topic.slug: s.state for s in contact.subscriptions}


class ExportSchema(ma.Schema):
    email = fields.String()
    # The contact part: absent when the address is held only by hash (marks, events, mail).
    attributes = fields.Dict(metadata={"description": "contacts only"})
    source = fields.String(allow_none=True, metadata={"description": "contacts only"})
    partner_sharing = fields.Boolean(metadata={"description": "contacts only"})
    created_at = fields.String(metadata={"description": "contacts only"})
    updated_at = fields.String(metadata={"description": "contacts only"})
    subscriptions = fields.Dict(
        metadata={"description": "contacts only: {slug: {state, created_at, updated_at}}"}
    )
    consent_history = fields.List(
        fields.Dict(), metadata={"description": "every consent change: at, subject, topic, "
                                               "state, source, note"}
    )
    suppressions = fields.List(fields.Dict(), metadata={"description": "marks on the address"})
    messages = fields.List(
        fields.Dict(), metadata={"description": "mail accepted for the address: id, category, "
                                               "template, status, created_at, sent_at"}
    )


_CONTACT_SCHEMA = ContactSchema()


def _commit_and_answer(contact: Contact, status: int) -> tuple[Response, int]:
    """Commit the request, answering with the contact as it was written.

    Serialized before the commit, which expires the session's objects: after it, reading them
    would load each again (the contact, its subscriptions, their topics) only to answer with
    what this request has just written."""
    answer = jsonify(_CONTACT_SCHEMA.dump(contact))
    db.session.commit()
    return answer, status


@blp.route("")
class ContactCollection(MethodView):
    @require_scope("contacts:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(ContactCreateSchema())  # an instance: webargs would build one per request
    @blp.response(201, ContactSchema, description="Created")
    @blp.alt_response(200, schema=ContactSchema, description="The address existed: updated")
    @errors(blp, KEYED, JSON_BODY, {409: "`contact_busy`: the address was created and erased "
                                         "concurrently, over and over; try again."})
    def post(self, body: dict[str, Any]) -> Any:
        """Create or update a contact and ask for its subscriptions."""
        result = contacts.upsert(
            body["email"],
            topics=body["topics"],
            source=body["source"],
            partner_sharing=body["partner_sharing"],
            attributes=body["attributes"],
            email_is_normalized=True,  # the Email field did it
        )
        confirmation.send_confirmation(result.contact, result.outcome.needs_confirmation)
        return _commit_and_answer(result.contact, 201 if result.created else 200)


@blp.route("/<email>")
class ContactItem(MethodView):
    @require_scope("contacts:read")
    @blp.doc(security=SECURITY)
    @blp.response(200, ContactSchema)
    @errors(blp, KEYED, CONTACT_PATH, NO_CONTACT)
    def get(self, email: str) -> Contact:
        """A contact with its subscription states."""
        return contacts.get(email)

    @require_scope("contacts:write")
    @blp.doc(security=SECURITY)
    @blp.arguments(ContactPatchSchema())
    @blp.response(200, ContactSchema)
    @errors(blp, KEYED, JSON_BODY, CONTACT_PATH, NO_CONTACT)
    def patch(self, body: dict[str, Any], email: str) -> tuple[Response, int]:
        """Change attributes (merged; null removes), partner sharing, or subscriptions."""
        contact = contacts.get(email)
        outcome = contacts.update(
            contact,
            attributes=body.get("attributes"),
            partner_sharing=body.get("partner_sharing"),
            subscriptions=body.get("subscriptions"),
        )
        confirmation.send_confirmation(contact, outcome.needs_confirmation)
        return _commit_and_answer(contact, 200)

    @require_scope("contacts:write")
    @blp.doc(security=SECURITY)
    @blp.response(204, description="Erased")
    @errors(blp, KEYED, CONTACT_PATH, HELD)
    def delete(self, email: str) -> Response:
        """Erase the address: no plaintext remains; it stays suppressed by keyed hash.

        An address held only by hash (a Tell-a-Friend recipient, a bounce, a transactional
        send) is erased too; 404 only when nothing at all is held about it."""
        contacts.erase_address(email)
        db.session.commit()
        contacts.checkpoint_after_erasure()
        # A bare response: flask-smorest would serialize None into an empty body labelled
        # application/json, and a 204 carries no body nor a content type.
        response = Response(status=204)
        del response.headers["Content-Type"]  # Werkzeug labels every response by default
        return response


@blp.route("/<email>/export")
class ContactExport(MethodView):
    @require_scope("contacts:read")
    @blp.doc(security=SECURITY)
    @blp.response(200, ExportSchema)
    @errors(blp, KEYED, CONTACT_PATH, HELD)
    def get(self, email: str) -> dict[str, Any]:
        """Everything held about the address, consent history included.

        An address that is not a contact but is held by hash (marks, consent events, outbox
        rows) answers with those parts alone; 404 only when nothing at all is held."""
        return contacts.export_address(email)
