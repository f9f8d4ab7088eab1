"""Who may see what in the console: every page needs a login; some need an admin.

Admins run the keys to the service (console users, API keys, webhooks); marketers do the
rest. An admin-only view is marked with `@admin_only`, the one check for it: a marketer
gets a 403 page of the console, never the page or a hint of what is on it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import render_template
from flask_login import current_user

from mailer.extensions import login_manager

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., Any])


def admin_only(view: View) -> View:
    """Let only admins through to `view`; a marketer gets the 403 page, a stranger the login."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            log.info("console admin-only page refused user_id=%s", current_user.id)
            return render_template("admin/forbidden.html"), 403
        return view(*args, **kwargs)

    return cast(View, guarded)


NOTE_LENGTH = 200  # consent_events.note


def console_note(said: str | None = None) -> str:
    """The consent event's note for a console action: the console user, and what they said
    (where consent was given). A consent event from the console always names its user."""
    who = f"console user {current_user.email}"
    note = f"{said.strip()} ({who})" if said and said.strip() else who
    if len(note) > NOTE_LENGTH:  # what the user typed gives way; their name stays whole
        keep = NOTE_LENGTH - len(who) - 4
        note = f"{said.strip()[:keep]}… ({who})"
    return note
