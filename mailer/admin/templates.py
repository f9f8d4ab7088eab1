"""The console's templates: the list with each template's kind of mail, a preview of any
template as a recipient gets it (desktop and phone widths, the real footer), and the editor
of templates written in the console (every save a new version).

Views on the console's blueprint (routes.blp): a logged-in user, CSRF on every form.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms
from mailer.admin.blueprint import blp
from mailer.errors import MailerError
from mailer.extensions import db
from mailer.messages import editing, templates
from mailer.messages.mime import OutgoingMail
from mailer.messages.models import BodyFormat, ConsoleTemplate, TemplateCategory
from mailer.messages.templates import TemplateInfo, TemplateProblem

log = logging.getLogger(__name__)

BLANK_VARIABLE_ROWS = 2


def _mail(mail: OutgoingMail) -> dict[str, Any]:
    return {"subject": mail.subject, "html": mail.html, "text": mail.text}


def _info(name: str) -> TemplateInfo:
    """The template a page is about, or a 404 page (a bad template.toml is shown, not 500)."""
    try:
        return templates.lookup(name)
    except TemplateProblem:
        abort(404)


# -- list and preview --------------------------------------------------------------------------

@blp.get("/templates", endpoint="templates")
def template_list() -> str:
    """Every sendable template with its kind of mail and where it comes from."""
    return render_template("admin/templates.html", templates=templates.catalogue())


@blp.route("/templates/<name>", methods=["GET", "POST"])
def template_preview(name: str) -> tuple[str, int]:
    """A template as a recipient gets it, with data the marketer edits as JSON (its
    variables' examples to start with); `?version=N` shows an older console version."""
    version = request.args.get("version", type=int)
    info = _info(f"{name}@{version}" if version else name)
    form = forms.TemplatePreviewForm()
    if request.method == "GET":
        form.data.data = editing.sample_data(info)
    mail, problem, status = None, None, 200
    if request.method == "GET" or form.validate_on_submit():
        try:
            mail = _mail(editing.preview(info.reference, info.category, form.data.data))
        except MailerError as exc:
            problem, status = exc.message, 422
    else:
        status = 422
    history = editing.versions(info.name) if info.source == "console" else []
    return render_template("admin/template_preview.html", info=info, form=form, preview=mail,
                           problem=problem, versions=history), status


# -- the editor --------------------------------------------------------------------------------

def _variable_rows(form: forms.TemplateForm, variables: list[dict[str, Any]]) -> None:
    while len(form.variables.entries):
        form.variables.pop_entry()
    for variable in variables:
        example = variable.get("example")
        form.variables.append_entry({
            "name": variable["name"], "label": variable.get("label") or "",
            "example": example if isinstance(example, str) or example is None
            else json.dumps(example, ensure_ascii=False)})


def _add_blank_rows(form: forms.TemplateForm) -> None:
    filled = [entry for entry in form.variables.entries if entry.form.name.data]
    while len(form.variables.entries) < len(filled) + BLANK_VARIABLE_ROWS:
        form.variables.append_entry()


def _draft(form: forms.TemplateForm, name: str) -> editing.Draft:
    variables = [
        {"name": entry.form.name.data.strip(),
         "label": (entry.form.label.data or "").strip() or entry.form.name.data.strip(),
         "example": editing.parse_example(entry.form.example.data or "")}
        for entry in form.variables.entries if (entry.form.name.data or "").strip()
    ]
    return editing.Draft(
        name=name, category=TemplateCategory(form.category.data),
        subject=form.subject.data or "", body_format=BodyFormat(form.body_format.data),
        body=form.body.data or "", description=form.description.data or "",
        text=form.text.data if form.text_by_hand.data else None, variables=variables,
    )


def _field_errors(form: forms.TemplateForm, error: MailerError) -> None:
    for field_name, messages in (error.fields or {}).items():
        field = getattr(form, field_name, None)
        if field is not None and hasattr(field, "errors") and field_name != "variables":
            field.errors = [*field.errors, *(messages if isinstance(messages, list)
                                             else [str(messages)])]


def _fill_from(form: forms.TemplateForm, row: ConsoleTemplate) -> None:
    form.category.data = row.category
    form.description.data = row.description
    form.subject.data = row.subject
    form.body_format.data = row.body_format
    form.body.data = row.body_source
    form.text_by_hand.data = row.text_source is not None
    form.text.data = row.text_source or row.body_text
    form.base_version.data = str(row.version)
    _variable_rows(form, row.variables)


def _fill_from_file(form: forms.TemplateForm, info: TemplateInfo) -> None:
    """A folder template as the start of a console one of the same name (which then wins)."""
    folder = Path(info.location)
    html = folder / "body.html"
    form.category.data = info.category.value
    form.description.data = info.description
    form.subject.data = (folder / "subject.txt").read_text(encoding="utf-8").strip()
    form.body_format.data = "html" if html.is_file() else "markdown"
    form.body.data = (html if html.is_file() else folder / "body.txt").read_text(
        encoding="utf-8")
    form.text_by_hand.data = True
    form.text.data = (folder / "body.txt").read_text(encoding="utf-8")
    _variable_rows(form, [{"name": v.name, "label": v.label, "example": v.example}
                          for v in info.variables] if info.declared else [])


def _editor(name: str | None) -> BaseResponse | tuple[str, int]:
    """New (name None) or edit: Preview renders the unsaved draft; Save stores a version."""
    form = forms.TemplateForm()
    existing = editing.newest(name) if name else None
    file_info = templates.file_template(name) if name and existing is None else None
    if name and existing is None and (file_info is None or file_info.service is not None):
        abort(404)
    if name:
        form.name.data = name
    if request.method == "GET":
        if existing is not None:
            _fill_from(form, existing)
        elif file_info is not None:
            _fill_from_file(form, file_info)
    preview, problem = None, None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            draft = _draft(form, name or form.name.data.strip())
            try:
                if request.form.get("action") == "save":
                    base = int(form.base_version.data) if form.base_version.data else None
                    row = editing.save(draft, user_id=current_user.id,
                                       new=existing is None, base_version=base)
                    db.session.commit()
                    log.info("console template saved template_id=%s version=%s user_id=%s",
                             row.id, row.version, current_user.id)
                    flash(f"Saved as version {row.version}.", "notice")
                    return redirect(url_for("admin.template_preview", name=row.name))
                preview = _mail(editing.preview_draft(draft, editing.draft_sample(draft)))
            except MailerError as exc:
                db.session.rollback()
                problem = exc.message
                _field_errors(form, exc)
                status = 422
        else:
            status = 422
    _add_blank_rows(form)
    return render_template("admin/template_edit.html", form=form, name=name,
                           existing=existing, file_info=file_info, preview=preview,
                           problem=problem), status


@blp.route("/templates/new", methods=["GET", "POST"])
def template_new() -> BaseResponse | tuple[str, int]:
    return _editor(None)


@blp.route("/templates/<name>/edit", methods=["GET", "POST"])
def template_edit(name: str) -> BaseResponse | tuple[str, int]:
    return _editor(name)
