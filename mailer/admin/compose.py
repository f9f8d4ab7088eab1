"""The console's campaign compose form: a promotional template's variables as fields, a
segment builder over contact attributes with the recipient count, preview, then the draft.

The count is the fan-out's own selection (campaigns.fanout.count_recipients), so the number
shown is who the campaign would reach if it went out now; consent is checked again for each
mail at delivery.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse
from wtforms import StringField, TextAreaField
from wtforms.validators import Length

from mailer.admin import forms
from mailer.admin.blueprint import blp
from mailer.campaigns import fanout
from mailer.campaigns import services as campaigns
from mailer.campaigns.models import Campaign
from mailer.card_numbers import holds_card_number
from mailer.errors import MailerError, ValidationFailed
from mailer.extensions import db
from mailer.messages import editing, templates
from mailer.messages.models import TemplateCategory
from mailer.messages.templates import TemplateInfo
from mailer.topics.services import list_topics, topics_by_slug

FIELD_PREFIX = "var_"
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def promotional_templates() -> list[TemplateInfo]:
    """The templates a campaign may send."""
    return [info for info in templates.catalogue()
            if info.category is TemplateCategory.PROMOTIONAL and info.service is None]


def _structured(variable: templates.Variable) -> bool:
    """A variable whose value is a list or an object (a loop's items): typed as JSON."""
    return isinstance(variable.example, list | dict)


def compose_form(info: TemplateInfo | None) -> forms.ComposeForm:
    """The compose form with a field for each of the template's variables, labelled."""

    class Form(forms.ComposeForm):
        pass

    for variable in info.variables if info else ():
        example = variable.example
        if _structured(variable):
            field = TextAreaField(variable.label, validators=[Length(max=100_000)],
                                  description="A list, written as JSON.",
                                  render_kw={"rows": 4, "class": "code",
                                             "placeholder": json.dumps(example,
                                                                       ensure_ascii=False)})
        elif isinstance(example, str) and len(example) > 60:
            field = TextAreaField(variable.label, validators=[Length(max=100_000)],
                                  render_kw={"rows": 3, "placeholder": example})
        else:
            field = StringField(variable.label, validators=[Length(max=10_000)],
                                render_kw={"placeholder": "" if example is None
                                           else str(example)})
        setattr(Form, FIELD_PREFIX + variable.name, field)
    return Form()


def variable_fields(form: forms.ComposeForm, info: TemplateInfo | None) -> list[Any]:
    return [form[FIELD_PREFIX + v.name] for v in info.variables] if info else []


def data_of(form: forms.ComposeForm, info: TemplateInfo) -> dict[str, Any]:
    """The campaign's data from the variables' fields; an empty field is left out. Bad JSON
    in a list's field, and a card number anywhere, are ValidationFailed naming the field."""
    data: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for variable in info.variables:
        raw = (form[FIELD_PREFIX + variable.name].data or "").strip()
        if not raw:
            continue
        if _structured(variable):
            try:
                data[variable.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems[FIELD_PREFIX + variable.name] = [
                    f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
        else:
            data[variable.name] = raw
    for name, value in data.items():
        if holds_card_number(value):
            problems[FIELD_PREFIX + name] = ["It holds what looks like a payment card number; "
                                             "card numbers are never stored."]
    if problems:
        raise ValidationFailed("Some fields need another look.", fields=problems)
    return data


def _typed(value: str) -> str | int | float | bool:
    """A typed segment value: true/false, a number, or the text."""
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number
    return value.strip()


def segment_of(form: forms.ComposeForm) -> dict[str, Any]:
    """The builder's rows as a campaign segment ({"attributes": {name: value}})."""
    attributes = {}
    for row in form.segment.entries:
        name = (row.form.attribute.data or "").strip()
        if name:
            attributes[name] = _typed(row.form.value.data or "")
    return campaigns.check_segment({"attributes": attributes} if attributes else {})


def _mail(mail: Any) -> dict[str, Any]:
    return {"subject": mail.subject, "html": mail.html, "text": mail.text}


def _field_errors(form: forms.ComposeForm, error: MailerError) -> None:
    for name, messages in (error.fields or {}).items():
        field = form._fields.get(name)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, *(messages if isinstance(messages, list)
                                             else [str(messages)])]


@blp.route("/campaigns/new", methods=["GET", "POST"])
def compose() -> BaseResponse | tuple[str, int]:
    """Choose a template (its variables become fields), fill them in, narrow the topic's
    subscribers by attributes; Count shows the recipients, Preview the mail as a subscriber
    gets it; Create stores the draft."""
    offered = promotional_templates()
    chosen = request.form.get("template") or request.args.get("template") or ""
    info = next((t for t in offered if t.name == chosen), None)
    form = compose_form(info)
    form.topic.choices = [("", "Choose a topic")] + [(t.slug, t.name) for t in list_topics()]
    form.template.choices = [("", "Choose a template")] + [
        (t.name, f"{t.name}: {t.description}" if t.description else t.name) for t in offered]
    if request.method == "GET" and info is not None:
        form.template.data = info.name
    action = request.form.get("action", "preview")
    preview, problem, recipients, status = None, None, None, 200
    if request.method == "POST" and action != "choose":  # "choose": show the fields only
        if form.validate_on_submit() and info is not None:  # CSRFProtect checked the token
            try:
                segment = segment_of(form)
                topic = topics_by_slug([form.topic.data], field="topic")[form.topic.data]
                recipients = fanout.count_recipients(topic.id, segment)
                data = data_of(form, info)
                if action != "count":
                    missing = editing.missing_variables(info, data)
                    if missing:
                        raise ValidationFailed(
                            "Fill in every field the template needs: "
                            + ", ".join(v.label for v in missing) + ".",
                            fields={FIELD_PREFIX + v.name: ["Fill this in."] for v in missing})
                if action == "create":
                    campaign = campaigns.create(form.name.data, form.topic.data,
                                                info.reference, data, segment)
                    db.session.commit()
                    flash("Draft saved. Send a test, then schedule it.", "notice")
                    return redirect(url_for("admin.campaign", campaign_id=campaign.public_id))
                if action != "count":
                    draft = Campaign(topic=topic, topic_id=topic.id, template=info.reference,
                                     data=data, segment=segment)
                    preview = _mail(campaigns.render_preview(draft))
            except MailerError as exc:
                db.session.rollback()
                problem = exc.message
                _field_errors(form, exc)
                status = 422
        else:
            status = 422
    return render_template(
        "admin/compose.html", form=form, info=info, preview=preview, problem=problem,
        recipients=recipients, variable_fields=variable_fields(form, info),
    ), status
