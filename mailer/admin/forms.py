"""Flask-WTF forms of the console; each carries a CSRF token."""

from __future__ import annotations

import json
from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    EmailField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    EqualTo,
    InputRequired,
    Length,
    Optional,
    Regexp,
    ValidationError,
)

from mailer.card_numbers import holds_card_number
from mailer.pages.forms import MultiCheckboxField

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


class SegmentRowForm(Form):
    """One condition of the segment builder: a contact attribute and the value it must have."""

    attribute = StringField("Attribute", validators=[Optional(), Length(max=64)])
    value = StringField("Value", validators=[Length(max=500)])


class ComposeForm(FlaskForm):
    """A campaign: who (topic and segment) and what (a promotional template and a field for
    each of its variables, added per template by admin.compose.compose_form)."""

    name = StringField("Name", validators=[DataRequired("Give the campaign a name."),
                                           Length(max=200)])
    topic = SelectField("Topic (who gets it: the topic's subscribers)",
                        validators=[DataRequired("Choose a topic.")])
    template = SelectField("Template",
                           validators=[DataRequired("Choose a template.")])
    segment = FieldList(FormField(SegmentRowForm), min_entries=3, max_entries=20)


class TestSendForm(FlaskForm):
    # A choice among the test recipients (console users and MAILER_TEST_RECIPIENTS), never a
    # typed address: see campaigns.testing.
    to = SelectField("Send a test to", validate_choice=True,
                     validators=[DataRequired("Choose an address.")])


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


# -- templates written in the console ------------------------------------------------------------

class VariableForm(Form):
    """One variable of a console template: its name in the template, a label, an example.

    A sub-form (no CSRF token of its own: the template form's covers it)."""

    name = StringField("Variable", validators=[
        Optional(), Length(max=64),
        Regexp(r"^[A-Za-z_][A-Za-z0-9_]*$",
               message="A variable is letters, digits and _, not starting with a digit.")])
    label = StringField("Label", validators=[Length(max=200)])
    example = StringField("Example", validators=[Length(max=2000)])


class TemplateForm(FlaskForm):
    """The console's template editor; saving stores the next version."""

    name = StringField("Name (used by the API and campaigns)", validators=[
        DataRequired("Give the template a name."), Length(max=80)])
    category = SelectField("Kind of mail", default="promotional")
    description = StringField("Description (for the template list)",
                              validators=[Length(max=500)])
    subject = StringField("Subject", validators=[DataRequired("Write a subject."),
                                                 Length(max=998)])
    body_format = RadioField("Body written in", default="markdown")
    body = TextAreaField("Body", validators=[DataRequired("Write the body."),
                                             Length(max=200_000)],
                         render_kw={"rows": 14, "spellcheck": "true"})
    text_by_hand = BooleanField("Write the text part by hand (otherwise it is made from the "
                                "body)")
    text = TextAreaField("Text part", validators=[Length(max=200_000)],
                         render_kw={"rows": 8})
    variables = FieldList(FormField(VariableForm), min_entries=1, max_entries=50)
    # The version the editor started from: saving over a newer one is refused.
    base_version = HiddenField()

    CATEGORIES = [
        ("promotional", "Promotional: marketing to a topic's subscribers (footer and "
                        "unsubscribe link added)"),
        ("transactional", "Transactional: a reply to something the reader did (receipts)"),
        ("notice", "Notice: a service notice (privacy policy changes)"),
    ]
    BODY_FORMATS = [("markdown", "Markdown"), ("html", "HTML")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not in the field: WTForms warns about tuple choices given to a field.
        self.category.choices = self.CATEGORIES
        self.body_format.choices = self.BODY_FORMATS


# -- topics ------------------------------------------------------------------------------------

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"


class TopicForm(FlaskForm):
    """What a marketer sets on a topic; the slug only when it is made."""

    name = StringField("Name", validators=[DataRequired("Give the topic a name."),
                                           Length(max=200)])
    description = TextAreaField("Description (shown on the signup page)",
                                validators=[Length(max=2000)], render_kw={"rows": 3})
    double_opt_in = BooleanField("Double opt-in: a new subscriber confirms through a mailed link")
    public = BooleanField("Public: offered on the signup page")
    welcome_text = TextAreaField("Welcome text (shown on the confirmation page)",
                                 validators=[Length(max=2000)], render_kw={"rows": 3})
    # Choices (the promotional templates) are set by the view; the service checks the value.
    welcome_template = SelectField(
        "Welcome mail (a promotional template mailed once a subscription is confirmed)",
        validate_choice=False)


class NewTopicForm(TopicForm):
    slug = StringField("Slug (in URLs and the API; cannot change later)", validators=[
        DataRequired("Give the topic a slug."),
        Regexp(SLUG_PATTERN, message="Lower-case letters, digits and dashes, 1-64."),
    ])


# -- contacts ----------------------------------------------------------------------------------

class ContactLookupForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter an address."),
                                                    Length(max=254)])


class ConfirmedActionForm(FlaskForm):
    """A second step's button: the address acted on travels in the form, never in a URL."""

    email = HiddenField(validators=[DataRequired(), Length(max=254)])


class NewContactForm(FlaskForm):
    email = EmailField("Email address", validators=[DataRequired("Enter an address."),
                                                    Length(max=254)])
    topics = MultiCheckboxField("Topics", validators=[DataRequired("Choose a topic.")])
    source = StringField("Where consent was given (e.g. 'shop counter, signup card')",
                         validators=[DataRequired("Say where the address gave consent."),
                                     Length(max=120)])


class ImportForm(FlaskForm):
    file = FileField("CSV file (a header row with an 'email' column; other columns become "
                     "attributes)", validators=[FileRequired("Choose a CSV file.")])
    topic = SelectField("Topic", validate_choice=True,
                        validators=[DataRequired("Choose a topic.")])
    source = StringField("Where consent was given", validators=[
        DataRequired("Say where the addresses gave consent."), Length(max=120)])
    confirm = BooleanField("Every address in the file gave consent to this topic",
                           validators=[DataRequired("Only import addresses that consented.")])
