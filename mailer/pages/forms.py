"""Flask-WTF forms of the public pages. Every form has CSRF and a honeypot field."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectMultipleField, StringField, widgets
from wtforms.validators import DataRequired, Length, ValidationError

from mailer import addresses
from mailer.card_numbers import text_holds_card_number


def valid_address(_form: FlaskForm, field: Any) -> None:
    """Normalize the address in place, or say what is wrong with it."""
    try:
        field.data = addresses.normalize(field.data or "")
    except addresses.InvalidAddress as exc:
        raise ValidationError(str(exc)) from exc


def no_card_number(_form: FlaskForm, field: Any) -> None:
    if isinstance(field.data, str) and text_holds_card_number(field.data):
        raise ValidationError("Please do not enter payment card numbers here.")


class HoneypotForm(FlaskForm):
    """A field people never see; bots fill it, and their request is dropped quietly."""

    website = StringField("Leave this field empty", render_kw={
        "autocomplete": "off", "tabindex": "-1", "aria-hidden": "true",
    })

    def is_bot(self) -> bool:
        return bool(self.website.data)


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class SubscribeForm(HoneypotForm):
    email = EmailField("Your email address",
                       validators=[DataRequired("Enter your email address."), valid_address])
    topics = MultiCheckboxField("What would you like to receive?", coerce=str,
                                validate_choice=True)
    partner_sharing = BooleanField(
        "Yes, you may share my email address with your partners so they can send me offers. "
        "(Optional; you can withdraw this at any time.)"
    )

    def validate_topics(self, field: MultiCheckboxField) -> None:
        if not field.data:
            raise ValidationError("Choose at least one.")


class EmbedSubscribeForm(HoneypotForm):
    """The embeddable form's fields (mailer.pages.embed); made with CSRF off, since its signed
    form token, checked before, stands in for the session's CSRF token."""

    email = EmailField("Your email address",
                       validators=[DataRequired("Enter your email address."), valid_address])
    topics = MultiCheckboxField("What would you like to receive?", coerce=str,
                                validate_choice=True)
    form_token = StringField()

    def validate_topics(self, field: MultiCheckboxField) -> None:
        if not field.data:
            raise ValidationError("Choose at least one.")


class AddressForm(HoneypotForm):
    email = EmailField("Your email address",
                       validators=[DataRequired("Enter your email address."), valid_address])


class PreferencesForm(FlaskForm):
    topics = MultiCheckboxField("I want to receive", coerce=str, validate_choice=True)
    partner_sharing = BooleanField("You may share my email address with your partners")


class LeaveForm(FlaskForm):
    """"Unsubscribe from everything": only the CSRF token."""


class ConfirmForm(FlaskForm):
    """The confirmation page's one button; the sharing box starts unticked, always."""

    partner_sharing = BooleanField(
        "Yes, you may share my email address with your partners so they can send me offers. "
        "(Optional; you can withdraw this at any time.)", default=False)


class ResendConfirmationForm(FlaskForm):
    token = StringField(validators=[DataRequired(), Length(max=2000)])


__all__ = [
    "AddressForm",
    "ConfirmForm",
    "EmbedSubscribeForm",
    "LeaveForm",
    "PreferencesForm",
    "ResendConfirmationForm",
    "SubscribeForm",
    "no_card_number",
]
