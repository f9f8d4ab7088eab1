"""Flask-WTF forms of the console; each carries a CSRF token."""

from __future__ import annotations

import json
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeLocalField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length, ValidationError

from mailer.card_numbers import holds_card_number

MAX_JSON_LENGTH = 100_000


class JsonObjectField(TextAreaField):
    """A textarea holding a JSON object; `data` is the parsed dict, the typed text is kept.

    An empty box is `{}`. Bad JSON or another JSON type is a field error, as is a card
    number anywhere in it (card numbers are never stored).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._problem: str | None = None

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = (valuelist[0] if valuelist else "") or ""
        self._problem = None
        if len(text) > MAX_JSON_LENGTH:
            self.data, self._problem = {}, f"At most {MAX_JSON_LENGTH} characters."
            return
        if not text.strip():
            self.data = {}
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.data = {}
            self._problem = f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            return
        if not isinstance(value, dict):
            self.data, self._problem = {}, 'A JSON object is needed, like {"name": "value"}.'
            return
        self.data = value

    def pre_validate(self, form: FlaskForm) -> None:
        if self._problem:
            raise ValidationError(self._problem)
        if holds_card_number(self.data):
            raise ValidationError("It holds what looks like a payment card number; card "
                                  "numbers are never stored.")

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return json.dumps(self.data or {}, indent=2, ensure_ascii=False)


class LoginForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter your email address."),
                                                    Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password."),
                                                     Length(max=1024)])


class ActionForm(FlaskForm):
    """A button that changes something: only the CSRF token (log out, pause, send now, ...)."""


class ComposeForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Give the campaign a name."),
                                           Length(max=200)])
    topic = SelectField("Topic (who gets it: the topic's subscribers)",
                        validators=[DataRequired("Choose a topic.")])
    template = SelectField("Template", validators=[DataRequired("Choose a template.")])
    data = JsonObjectField("Data (JSON: the template's variables)", render_kw={"rows": 8})
    segment = JsonObjectField(
        'Segment (optional JSON, e.g. {"attributes": {"country": "DE"}})',
        render_kw={"rows": 3},
    )


class TestSendForm(FlaskForm):
    to = EmailField("Send a test to", validators=[DataRequired("Enter an address."),
                                                  Length(max=254)])


class ScheduleForm(FlaskForm):
    send_at = DateTimeLocalField("Send at", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
                                 validators=[InputRequired("Choose a date and time.")])
    timezone = SelectField("Time zone", validate_choice=True)
    # Filled by the page's script with the browser's zone; the select's blank choice uses it.
    browser_timezone = HiddenField()


class TemplatePreviewForm(FlaskForm):
    data = JsonObjectField("Sample data (JSON)", render_kw={"rows": 10})


class SuppressionLookupForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter an address."),
                                                    Length(max=254)])


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Current password", validators=[
        DataRequired("Enter your current password."), Length(max=1024)])
    new = PasswordField("New password (at least 12 characters)", validators=[
        DataRequired("Enter a new password."), Length(max=1024)])
    again = PasswordField("New password again", validators=[
        DataRequired("Enter the new password again."), EqualTo("new", "The two differ.")])
