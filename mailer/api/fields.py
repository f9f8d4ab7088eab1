"""Marshmallow building blocks shared by the API's schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields

from mailer import addresses


class StrictSchema(ma.Schema):
    """Unknown fields are an error, never silently dropped."""

    class Meta:
        unknown = ma.RAISE


class StrictBoolean(fields.Boolean):
    """A JSON true/false only: marshmallow would also take "yes", 1 and friends."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def strict_boolean(**kwargs: Any) -> fields.Boolean:
    """A field taking JSON true/false and nothing else."""
    return StrictBoolean(**kwargs)


def attributes_field(**kwargs: Any) -> fields.Dict:
    """A contact's attribute object; contents are checked by contacts.services.check_attributes."""
    return fields.Dict(
        keys=fields.String(),
        metadata={"description": "small flat object of strings, numbers, booleans (null removes)"},
        **kwargs,
    )


class Email(fields.String):
    """An email address, checked by email-validator and loaded in its normal form."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return addresses.normalize(text)
        except addresses.InvalidAddress as exc:
            raise ma.ValidationError(str(exc)) from exc
