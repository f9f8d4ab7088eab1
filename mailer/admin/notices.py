"""The console's notices: send a notice template for a policy version (the template's variables
as fields) to every contact the consent gate's notice rule allows, and follow its progress.

It posts through notices.services, as the API does: a contact that had the version from an
earlier posting gets nothing more, and each recipient's consent history names the version.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Length

from mailer.admin.blueprint import blp
from mailer.admin.compose import FIELD_PREFIX, data_of
from mailer.consent.models import ConsentSource
from mailer.errors import MailerError, NotFound, ValidationFailed
from mailer.extensions import db
from mailer.messages import templates
from mailer.messages.models import TemplateCategory
from mailer.messages.templates import TemplateInfo
from mailer.notices import services as notices


class NoticeForm(FlaskForm):
    """A notice: which notice template, which policy version, and (added per template by
    notice_form) a field for each of the template's variables."""

    template = SelectField("Template", validators=[DataRequired("Choose a template.")])
    policy_version = StringField(
        "Policy version (each contact gets a version once, however often it is sent)",
        validators=[DataRequired("Name the policy version."),
                    Length(max=notices.POLICY_VERSION_LENGTH)])


def notice_templates() -> list[TemplateInfo]:
    """The templates a notice may send."""
    return [info for info in templates.catalogue()
            if info.category is TemplateCategory.NOTICE and info.service is None]


def notice_form(info: TemplateInfo | None) -> NoticeForm:
    """The form with a text field for each of the template's variables, labelled."""

    class Form(NoticeForm):
        pass

    for variable in info.variables if info else ():
        setattr(Form, FIELD_PREFIX + variable.name, StringField(
            variable.label, validators=[Length(max=10_000)],
            render_kw={"placeholder": "" if variable.example is None
                       else str(variable.example)}))
    form = Form()
    form.template.choices = [(t.name, f"{t.name}: {t.description}" if t.description else t.name)
                             for t in notice_templates()]
    return form


def _chosen(name: str | None) -> TemplateInfo | None:
    choices = notice_templates()
    if not choices:
        return None
    for info in choices:
        if info.name == name:
            return templates.lookup(info.name)  # with its declared variables
    return templates.lookup(choices[0].name)


@blp.route("/notices", methods=["GET", "POST"])
def notice_list() -> BaseResponse | tuple[str, int]:
    """The form (GET ?template= picks the template whose fields show) and the notices sent."""
    info = _chosen(request.form.get("template") or request.args.get("template"))
    form = notice_form(info)
    if info is not None and request.method == "GET":
        form.template.data = info.name
    problem = None
    status = 200
    if form.validate_on_submit() and info is not None:
        try:
            notice = notices.post(info.name, data_of(form, info), form.policy_version.data,
                                  source=ConsentSource.ADMIN, created_by=current_user.email)
        except ValidationFailed as exc:
            db.session.rollback()
            for name, messages in (exc.fields or {}).items():
                if name in form:
                    form[name].errors = list(messages)
            problem, status = exc.message, 422
        except MailerError as exc:
            db.session.rollback()
            problem, status = exc.message, 422
        else:
            db.session.commit()
            flash(f"Notice queued to {notice.recipients} "
                  f"{'contact' if notice.recipients == 1 else 'contacts'}.", "notice")
            return redirect(url_for("admin.notice_page", notice_id=notice.public_id))
    elif request.method == "POST":
        status = 422
    fields = [form[FIELD_PREFIX + v.name] for v in info.variables] if info else []
    return render_template(
        "admin/notices.html", form=form, info=info, variable_fields=fields, problem=problem,
        audience=notices.count_recipients(), sent=[
            (notice, notices.stats(notice)) for notice in notices.list_notices(50)],
    ), status


def progress(counts: dict[str, Any]) -> dict[str, Any]:
    """Done (final) of the recipients, and the percentage."""
    done = counts["sent"] + counts["failed"] + counts["suppressed"] + counts["cancelled"]
    total = counts["recipients"]
    return {"done": done, "percent": 100 if not total else round(100 * done / total),
            "final": done >= total}


@blp.get("/notices/<notice_id>")
def notice_page(notice_id: str) -> str:
    """One notice: its template, version and progress (the page reloads itself until done)."""
    try:
        notice = notices.get(notice_id)
    except NotFound:
        abort(404)
    counts = notices.stats(notice)
    return render_template("admin/notice.html", notice=notice, counts=counts,
                           progress=progress(counts))
