"""Who is acting in the console: the note every consent change made there carries."""

from __future__ import annotations

from flask_login import current_user

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
