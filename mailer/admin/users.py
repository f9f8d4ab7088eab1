"""The console's users section (admins only) and every user's own password page.

Disabling a user and changing a password end every session of that user at once
(services.end_sessions); the user's own browser is logged in again after a change of its
own password, so that only the other sessions end.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_user
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms, services
from mailer.admin.access import admin_only
from mailer.admin.blueprint import blp, fresh_session
from mailer.admin.models import AdminUser
from mailer.errors import MailerError
from mailer.extensions import db

log = logging.getLogger(__name__)


@blp.get("/users")
@admin_only
def users() -> str:
    """Every console user: address, role, created, last login, disabled."""
    return render_template("admin/users.html", users=services.list_users())


@blp.route("/users/<int:user_id>/disable", methods=["GET", "POST"])
@admin_only
def disable_user(user_id: int) -> BaseResponse | tuple[str, int]:
    """GET: what disabling means, and the one button; POST (CSRF): disable the user."""
    user = db.session.get(AdminUser, user_id)
    if user is None:
        return render_template("admin/not_found.html", what="console user"), 404
    form = forms.ActionForm()
    if user.id == current_user.id:
        flash("You cannot disable yourself: ask another admin.", "error")
        return redirect(url_for("admin.users"))
    if form.validate_on_submit():
        services.disable_user(user)
        db.session.commit()
        log.info("console user disabled user_id=%s by user_id=%s", user.id, current_user.id)
        flash(f"{user.email} is disabled: their sessions have ended.", "notice")
        return redirect(url_for("admin.users"))
    return render_template("admin/disable_user.html", user=user, form=form), (
        400 if form.is_submitted() else 200)


@blp.route("/account", methods=["GET", "POST"])
def account() -> BaseResponse | tuple[str, int]:
    """Change one's own password: every other session of the user ends."""
    form = forms.PasswordChangeForm()
    problem = None
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if not services.password_matches(user, form.current.data):
            problem = "The current password is not right."
        else:
            try:
                services.set_password(user, form.new.data)
                db.session.commit()
            except MailerError as exc:
                db.session.rollback()
                problem = exc.message
            else:
                log.info("console password changed user_id=%s", user.id)
                fresh_session()
                login_user(user)
                flash("Password changed. Every other session of yours has ended.", "notice")
                return redirect(url_for("admin.account"))
    failed = form.is_submitted() and (problem is not None or bool(form.errors))
    return render_template("admin/account.html", form=form, problem=problem), (
        422 if failed else 200)
