"""/api/v1/templates: the templates a key can send, each with its declared kind of mail."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from mailer.api.docs import KEYED, errors
from mailer.api.guards import require_scope
from mailer.errors import NotFound
from mailer.messages import templates

URL_PREFIX = "/templates"
blp = Blueprint("templates", __name__,
                description="Templates and the kind of mail each one is (its category)")

SECURITY = [{"bearerAuth": []}]


class VariableSchema(ma.Schema):
    name = fields.String()
    label = fields.String()
    example = fields.Raw(allow_none=True)


class TemplateSchema(ma.Schema):
    name = fields.String()
    category = fields.Function(
        lambda t: t.category.value,
        metadata={"description": "transactional, promotional or notice: the kind of mail a "
                                 "send of it is (a folder without template.toml: promotional)"})
    description = fields.String()
    variables = fields.List(fields.Nested(VariableSchema))
    variables_declared = fields.Boolean(
        attribute="declared",
        metadata={"description": "false: the variables are the names the template reads"})
    source = fields.String(metadata={"description": "file or console"})
    version = fields.String(metadata={"description": "a console template's version number; "
                                                     "a file template's digest"})
    service_mail = fields.Function(
        lambda t: t.service.value if t.service else None,
        metadata={"description": "the service's own mail (confirmation, referral): not sent "
                                 "through the API"})


@blp.route("")
class TemplateCollection(MethodView):
    @require_scope("messages:send")
    @blp.doc(security=SECURITY)
    @blp.response(200, TemplateSchema(many=True))
    @errors(blp, KEYED)
    def get(self) -> Any:
        """Every template by name, with its category, description and variables."""
        return templates.catalogue()


@blp.route("/<name>")
class TemplateItem(MethodView):
    @require_scope("messages:send")
    @blp.doc(security=SECURITY)
    @blp.response(200, TemplateSchema)
    @errors(blp, KEYED, {404: "`template_not_found`: no template has that name."})
    def get(self, name: str) -> Any:
        """One template: a console template's newest version, else the folder."""
        try:
            return templates.lookup(name)
        except templates.UnknownTemplate as exc:
            raise NotFound("No template with that name.", code="template_not_found") from exc
