"""The `flask --app wsgi mailer ...` commands."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from mailer.apikeys import services as apikeys
from mailer.contacts.importing import ImportFileError, ImportReport, import_csv
from mailer.errors import MailerError
from mailer.extensions import db

mailer_cli = AppGroup("mailer", help="Operate the mailer service.")


def _check_installation() -> None:
    """Refuse to run, in one line and exit status 2 like any wrong setting, when the
    address-hash key is not the database's (see mailer.installation)."""
    from mailer.installation import AddressHashKeyChanged, check

    try:
        check()
    except AddressHashKeyChanged as exc:
        click.echo(f"mailer: configuration error: {exc}", err=True)
        raise SystemExit(2) from None


@mailer_cli.command("create-api-key")
@click.argument("name")
@click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(sorted(apikeys.SCOPES)),
    help="A scope the key gets (repeatable). With none, the key gets every scope.",
)
def create_api_key(name: str, scopes: tuple[str, ...]) -> None:
    """Create an API key; the key is printed alone on the last line and never stored."""
    # The name is how an operator tells keys apart (and revokes the right one); the column
    # holds 100 characters, and PostgreSQL would refuse more with a traceback.
    name = name.strip()
    problem = ("must not be empty" if not name
               else "must be at most 100 characters" if len(name) > 100
               else "must be one line of printable text" if not name.isprintable() else "")
    if problem:
        click.echo(f"Error: the key's NAME {problem}.", err=True)
        raise SystemExit(2)
    row, key = apikeys.issue(name, list(scopes))
    db.session.commit()
    click.echo(f"API key {row.id} '{name}' with scopes: {' '.join(row.scopes)}")
    click.echo("Store it now: only its hash is kept.")
    click.echo(key)


@mailer_cli.command("create-user")
@click.argument("email")
def create_user(email: str) -> None:
    """Create a console (/admin/) user; the password is read from standard input.

    At a terminal it is asked for twice and not echoed; from a pipe, the first line is
    the password. At least 12 characters.
    """
    from mailer.admin import services as admin

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        user = admin.create_user(email, password)
        db.session.commit()
    except MailerError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Console user {user.id} created; log in at /admin/login.")


def _count_rows(path: Path) -> int:
    """The file's data rows, for the progress bar (lines after the header; a quoted field
    spanning lines makes this a little more than the rows)."""
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


@contextlib.contextmanager
def _import_progress(total: int) -> Iterator[Callable[[ImportReport], None]]:
    """The import's progress on standard error: a bar on a terminal; elsewhere (a log, a
    pipe) a line at most every two seconds, and one at the end."""
    if sys.stderr.isatty():
        with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
            shown = 0

            def advance(report: ImportReport) -> None:
                nonlocal shown
                bar.update(report.rows - shown)
                shown = report.rows

            yield advance
        return
    next_line = time.monotonic() + 2.0

    def print_line(report: ImportReport) -> None:
        nonlocal next_line
        if time.monotonic() >= next_line or report.rows >= total:
            click.echo(f"imported {report.rows} of {total} rows", err=True)
            next_line = time.monotonic() + 2.0

    yield print_line


@mailer_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", required=True, help="Slug of the topic the contacts consented to.")
@click.option("--source", required=True, help="Where the consent was collected (kept in the log).")
def import_contacts(file: Path, topic: str, source: str) -> None:
    """Import consented contacts from FILE.csv (header row with an 'email' column).

    Runs beside the service; safe to run again (a second run changes nothing). Unsubscribed
    and marked addresses are left as they are.
    """
    _check_installation()
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle, _import_progress(
            _count_rows(file)
        ) as progress:
            report = import_csv(handle, topic=topic, source=source, on_progress=progress)
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"The file is not UTF-8 text ({exc.reason}).") from exc
    except MailerError as exc:
        raise click.ClickException(exc.message) from exc
    for bad in report.bad_rows:
        click.echo(f"line {bad.line}: {bad.problem}", err=True)
    click.echo(f"imported {report.summary()}")


@mailer_cli.command("worker")
def worker() -> None:
    """Deliver queued mail until SIGTERM/SIGINT, then hand back what is held and exit 0."""
    from mailer.delivery.worker import run_worker

    _check_installation()
    raise SystemExit(run_worker(current_app._get_current_object()))  # type: ignore[attr-defined]


@mailer_cli.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--smtp-port", default=8025, show_default=True, type=int,
              help="Port of the capture SMTP server (MAILER_SMTP_URL points here by default).")
def dev(host: str, port: int, smtp_port: int) -> None:
    """Web, worker and a capture SMTP server in one process, for a first look."""
    from mailer.devtools.server import serve

    _check_installation()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(f"mailer: http://{host}:{port}/ (API /api/v1, captured mail /dev/mail/)")
    serve(app, host, port, smtp_port)


def register(app: Flask) -> None:
    """Attach the command group to the app."""
    app.cli.add_command(mailer_cli)
