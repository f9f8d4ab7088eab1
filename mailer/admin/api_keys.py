"""The console's API keys section (admins only): the keys with their last use, and revoking
one after a confirmation step. A key itself is never shown: only its hash is kept."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms
from mailer.admin.access import admin_only
from mailer.admin.blueprint import blp
from mailer.apikeys import services as apikeys
from mailer.apikeys.models import ApiKey
from mailer.errors import NotFound
from mailer.extensions import db

log = logging.getLogger(__name__)


@blp.get("/api-keys")
@admin_only
def api_keys() -> str:
    """Every key: name, id, scopes, created, last used (to the minute), revoked."""
    return render_template("admin/api_keys.html", keys=apikeys.list_keys(),
                           resolution=apikeys.LAST_USED_RESOLUTION)


@blp.route("/api-keys/<int:key_id>/revoke", methods=["GET", "POST"])
@admin_only
def revoke_api_key(key_id: int) -> BaseResponse | tuple[str, int]:
    """GET: what revoking this key means, and the one button; POST (CSRF): revoke it."""
    form = forms.ActionForm()
    key = db.session.get(ApiKey, key_id)
    if key is None:
        return render_template("admin/not_found.html", what="API key"), 404
    if form.validate_on_submit():
        try:
            _row, revoked = apikeys.revoke(key_id)
            db.session.commit()
        except NotFound:
            return render_template("admin/not_found.html", what="API key"), 404
        if revoked:
            log.info("console api key revoked key_id=%s", key_id)
            flash(f"API key {key.id} ({key.name}) is revoked: it is refused within "
                  f"{apikeys.CACHE_SECONDS:g} seconds everywhere.", "notice")
        else:
            flash(f"API key {key.id} ({key.name}) was revoked already.", "notice")
        return redirect(url_for("admin.api_keys"))
    return render_template("admin/revoke_api_key.html", key=key, form=form), (
        200 if not form.is_submitted() else 400)
