"""Console: contacts. Found by their exact address only, never listed (see the README's
console tour); added, imported, exported and erased through the same services as the API.

An address is never put in a URL here (URLs end up in logs and browser history): every
page about one address answers a POST whose form carries it.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from flask import (
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_template,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from mailer.admin import forms, services
from mailer.admin.access import console_note
from mailer.admin.blueprint import blp
from mailer.consent import confirmation
from mailer.consent.models import ConsentSource
from mailer.contacts import importing
from mailer.contacts import services as contacts
from mailer.errors import MailerError, NotFound
from mailer.extensions import db
from mailer.topics.services import list_topics

log = logging.getLogger(__name__)

def _open_topic_choices() -> list[tuple[str, str]]:
    """Topics a contact may be added to: every topic that is not retired."""
    return [(t.slug, t.name) for t in list_topics() if not t.retired]


@blp.route("/contacts", methods=["GET", "POST"])
def contacts_page() -> tuple[str, int]:
    """Find one contact by its exact address; a POST, so the address stays out of URLs."""
    form = forms.ContactLookupForm()
    card, status = None, 200
    if form.validate_on_submit():
        try:
            card = services.contact_card(form.email.data)
        except MailerError as exc:
            form.email.errors = [*form.email.errors, exc.message]
    if request.method == "POST" and card is None:
        status = 422
    return render_template("admin/contacts.html", form=form, card=card,
                           action_form=forms.ConfirmedActionForm), status


@blp.route("/contacts/new", methods=["GET", "POST"])
def contact_new() -> tuple[str, int]:
    """Add one address with a source, through the API's own service: a topic with double
    opt-in, or a marked address, gets a confirmation mail, never a silent subscription."""
    form = forms.NewContactForm()
    form.topics.choices = _open_topic_choices()
    card = None
    if form.validate_on_submit():
        try:
            result = contacts.upsert(form.email.data, topics=form.topics.data,
                                     source=console_note(form.source.data),
                                     channel=ConsentSource.ADMIN)
            confirmation.send_confirmation(result.contact, result.outcome.needs_confirmation)
            db.session.commit()
            log.info("console contact added contact_id=%s", result.contact.id)
            card = services.contact_card(result.contact.email)
            flash(_added_message(result.outcome.states, result.outcome.needs_confirmation),
                  "notice")
        except MailerError as exc:
            db.session.rollback()
            for name, messages in (exc.fields or {}).items():
                field = getattr(form, name, None)
                if field is not None:
                    field.errors = [*field.errors, *messages]
            if not exc.fields:
                form.email.errors = [*form.email.errors, exc.message]
    status = 422 if request.method == "POST" and card is None else 200
    return render_template("admin/contact_new.html", form=form, card=card,
                           action_form=forms.ConfirmedActionForm), status


def _added_message(states: dict[str, str], needs_confirmation: list[Any]) -> str:
    if needs_confirmation:
        return ("Added. A confirmation mail is on its way: the address is subscribed once "
                "its owner confirms.")
    if any(state == "subscribed" for state in states.values()):
        return "Added and subscribed."
    return "Added. Nothing changed for the topics asked."


# -- export and erasure ------------------------------------------------------------------------

@blp.post("/contacts/export")
def contact_export() -> Response | BaseResponse:
    """All that is held about the address, as the API's export answers it (a JSON file)."""
    from mailer.api.contacts import ExportSchema  # the API's own shape, so both agree

    form = forms.ConfirmedActionForm()
    if not form.validate_on_submit():
        flash("Find the contact first.", "error")
        return redirect(url_for("admin.contacts_page"))
    try:
        exported = ExportSchema().dump(contacts.export_address(form.email.data))
    except MailerError as exc:
        flash(exc.message, "error")
        return redirect(url_for("admin.contacts_page"))
    body = json.dumps(exported, indent=2, ensure_ascii=False, sort_keys=True)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": 'attachment; filename="contact-export.json"'})


@blp.post("/contacts/erase")
def contact_erase_confirm() -> tuple[str, int] | BaseResponse:
    """The confirmation step of an erasure: what will go, and one button."""
    form = forms.ConfirmedActionForm()
    if not form.validate_on_submit():
        flash("Find the contact first.", "error")
        return redirect(url_for("admin.contacts_page"))
    return render_template("admin/contact_erase.html", email=form.email.data,
                           form=forms.ConfirmedActionForm(email=form.email.data)), 200


@blp.post("/contacts/erase/confirmed")
def contact_erase() -> BaseResponse:
    """Erase the address (the API's erasure): no plaintext remains, the hash stays marked."""
    form = forms.ConfirmedActionForm()
    if form.validate_on_submit():
        try:
            contacts.erase_address(form.email.data, source=ConsentSource.ADMIN,
                                   note=console_note())
            db.session.commit()
            contacts.checkpoint_after_erasure()
            log.info("console erasure done")
            flash("Erased: no copy of the address remains, and it will never be mailed "
                  "marketing again.", "notice")
        except NotFound:
            flash("Nothing is held about that address: there was nothing to erase.", "notice")
        except MailerError as exc:
            db.session.rollback()
            flash(exc.message, "error")
    return redirect(url_for("admin.contacts_page"))


# -- import ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportSummary:
    """What the import page shows at the end: counts and the bad lines."""

    created: int
    updated: int
    kept_unsubscribed: int
    kept_marked: int
    bad_rows: list[tuple[int, str]]


def run_import(handle: IO[str], *, topic: str, source: str,
               progress: Callable[[int], None]) -> ImportSummary:
    """The console's one call of the importer (the code `mailer import` runs): import the
    open CSV file into `topic`, calling `progress(rows done)` after each committed batch."""
    report = importing.import_csv(handle, topic=topic, source=source,
                                  on_progress=lambda so_far: progress(so_far.rows))
    return ImportSummary(
        report.created, report.updated, report.kept_unsubscribed, report.kept_marked,
        [(row.line, row.problem) for row in report.bad_rows],
    )


def _rows_in(binary: IO[bytes]) -> int:
    """Data rows in the file (lines but the header), read once in blocks for the page's total."""
    lines, last = 0, b"\n"
    for block in iter(lambda: binary.read(1 << 16), b""):
        lines += block.count(b"\n")
        last = block[-1:]
    binary.seek(0)
    return max(0, lines + (last != b"\n") - 1)


@blp.route("/contacts/import", methods=["GET", "POST"])
def contact_import() -> Response | tuple[str, int]:
    """Upload a CSV; the answer is a page that streams the import's progress as it runs and
    ends with the counts and the bad lines (no script needed)."""
    form = forms.ImportForm()
    form.topic.choices = [("", "Choose a topic"), *_open_topic_choices()]
    if not form.validate_on_submit():
        status = 422 if request.method == "POST" else 200
        return render_template("admin/contact_import.html", form=form), status
    # A file of our own: the upload's stream ends with the request, the import may not.
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the import thread)
    form.file.data.save(spooled)
    spooled.seek(0)
    total = _rows_in(spooled)
    steps = _import_steps(spooled, topic=form.topic.data, source=console_note(form.source.data))
    log.info("console import started rows=%s", total)
    return Response(stream_template("admin/contact_import_run.html", steps=steps, total=total,
                                    topic=dict(form.topic.choices).get(form.topic.data)))


def _import_steps(binary: IO[bytes], *, topic: str, source: str
                  ) -> Iterator[tuple[str, Any]]:
    """Run the import in a thread of its own (with its own session) and yield what it reports:
    ("progress", rows done)..., then ("done", report) or ("failed", message)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    said: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        with app.app_context():
            try:
                with io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace",
                                      newline="") as handle:
                    report = run_import(handle, topic=topic, source=source,
                                        progress=lambda done: said.put(("progress", done)))
            except (importing.ImportFileError, MailerError) as exc:
                db.session.rollback()
                said.put(("failed", getattr(exc, "message", None) or str(exc)))
            except Exception:
                log.exception("console import failed")
                db.session.rollback()
                said.put(("failed", "The import stopped because of an error on our side; "
                                    "the rows before it are imported. Running it again "
                                    "is safe."))
            else:
                log.info("console import done created=%s updated=%s bad=%s", report.created,
                         report.updated, len(report.bad_rows))
                said.put(("done", report))
            finally:
                binary.close()

    threading.Thread(target=work, name="console-import", daemon=True).start()
    while True:
        step = said.get()
        yield step
        if step[0] != "progress":
            return
