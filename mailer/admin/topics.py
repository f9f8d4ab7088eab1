"""Console: topics (create, edit, retire). The rules live in mailer.topics.services."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms, services
from mailer.admin.blueprint import blp
from mailer.admin.compose import promotional_templates
from mailer.errors import MailerError
from mailer.extensions import db
from mailer.topics import services as topics


@blp.get("/topics")
def topic_list() -> str:
    """Every topic with its subscriber counts, retired ones last."""
    return render_template("admin/topics.html", topics=services.topic_counts())


def _text(field: Any) -> str:
    """A text field's value, trimmed ("" when the form left it out)."""
    return (field.data or "").strip()


def _with_welcome_choices(form: forms.TopicForm) -> forms.TopicForm:
    """The welcome mail's choices: none, or one of the promotional templates."""
    form.welcome_template.choices = [("", "No welcome mail")] + [
        (info.name, info.name) for info in promotional_templates()]
    return form


def _put_errors(form: forms.TopicForm, error: MailerError) -> None:
    for name, messages in (error.fields or {}).items():
        field = getattr(form, name, None)
        if field is not None:
            field.errors = [*field.errors, *messages]


@blp.route("/topics/new", methods=["GET", "POST"])
def topic_new() -> BaseResponse | tuple[str, int]:
    form = _with_welcome_choices(forms.NewTopicForm())
    if request.method == "GET":
        form.double_opt_in.data = True
    if form.validate_on_submit():
        try:
            topic = topics.create_topic(
                form.slug.data, _text(form.name), _text(form.description),
                bool(form.double_opt_in.data), bool(form.public.data),
                _text(form.welcome_text), form.welcome_template.data or None)
            db.session.commit()
            flash(f"Topic {topic.name!r} created.", "notice")
            return redirect(url_for("admin.topic_edit", slug=topic.slug))
        except MailerError as exc:
            db.session.rollback()
            _put_errors(form, exc)
    status = 422 if request.method == "POST" else 200
    return render_template("admin/topic_form.html", form=form, topic=None), status


@blp.route("/topics/<slug>", methods=["GET", "POST"])
def topic_edit(slug: str) -> BaseResponse | tuple[str, int]:
    topic = topics.get_topic(slug)
    form = _with_welcome_choices(forms.TopicForm(obj=topic))
    if form.validate_on_submit():
        try:
            topics.update_topic(topic, name=_text(form.name),
                                description=_text(form.description),
                                double_opt_in=bool(form.double_opt_in.data),
                                public=bool(form.public.data) and not topic.retired,
                                welcome_text=_text(form.welcome_text),
                                welcome_template=form.welcome_template.data or None)
        except MailerError as exc:
            db.session.rollback()
            _put_errors(form, exc)
        else:
            db.session.commit()
            flash("Saved.", "notice")
            return redirect(url_for("admin.topic_edit", slug=slug))
    status = 422 if request.method == "POST" else 200
    return render_template("admin/topic_form.html", form=form, topic=topic,
                           retire_form=forms.ActionForm()), status


@blp.route("/topics/<slug>/retire", methods=["GET", "POST"])
def topic_retire(slug: str) -> BaseResponse | str:
    """A confirmation page (GET), then the retirement (POST with its token)."""
    topic = topics.get_topic(slug)
    form = forms.ActionForm()
    if form.validate_on_submit():
        topics.retire_topic(topic)
        db.session.commit()
        flash(f"Topic {topic.name!r} retired: it takes no new subscriptions.", "notice")
        return redirect(url_for("admin.topic_list"))
    return render_template("admin/topic_retire.html", topic=topic, form=form,
                           counts=services.topic_counts_of(topic))
