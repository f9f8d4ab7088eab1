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
    help="A scope the key gets (repeatable). With none, the key gets every scope except "
         "inbound:write, which is given only when named.",
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


@mailer_cli.command("list-api-keys")
def list_api_keys() -> None:
    """List every API key: id, name, scopes, created, last used, revoked (never the key)."""
    rows = apikeys.list_keys()
    if not rows:
        click.echo("No API keys.")
        return

    def when(moment: object) -> str:
        return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "never"

    click.echo("id\tname\tscopes\tcreated\tlast used\trevoked")
    for row in rows:
        revoked = when(row.revoked_at) if row.revoked_at is not None else "-"
        click.echo(f"{row.id}\t{row.name}\t{' '.join(row.scopes or ())}\t"
                   f"{when(row.created_at)}\t{when(row.last_used_at)}\t{revoked}")


@mailer_cli.command("revoke-api-key")
@click.argument("key_id", metavar="ID", type=int)
def revoke_api_key(key_id: int) -> None:
    """Revoke the API key ID (see list-api-keys): every web process refuses it within seconds."""
    try:
        row, revoked = apikeys.revoke(key_id)
        db.session.commit()
    except MailerError as exc:
        raise click.ClickException(exc.message) from exc
    if revoked:
        click.echo(f"API key {row.id} '{row.name}' revoked; every web process refuses it "
                   f"within {apikeys.CACHE_SECONDS:g} seconds.")
    else:
        click.echo(f"API key {row.id} '{row.name}' was revoked already.")


@mailer_cli.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "marketer"]), default="admin",
              show_default=True,
              help="admin: everything; marketer: all but console users, API keys and webhooks.")
def create_user(email: str, role: str) -> None:
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
        user = admin.create_user(email, password, role)
        db.session.commit()
    except MailerError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Console user {user.id} ({user.role}) created; log in at /admin/login.")


@mailer_cli.command("disable-user")
@click.argument("email")
def disable_user(email: str) -> None:
    """Disable a console user: no more logins, and every session of theirs ends at once."""
    from mailer.admin import services as admin

    user = admin.user_by_email(email)
    if user is None:
        raise click.ClickException("There is no console user with that address.")
    admin.disable_user(user)
    db.session.commit()
    click.echo(f"Console user {user.id} disabled; their sessions have ended.")


@mailer_cli.command("set-password")
@click.argument("email")
def set_password(email: str) -> None:
    """Give a console user a new password (read as create-user reads it); every session of
    theirs ends at once."""
    from mailer.admin import services as admin

    user = admin.user_by_email(email)
    if user is None:
        raise click.ClickException("There is no console user with that address.")
    if sys.stdin.isatty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True,
                                err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        admin.set_password(user, password)
        db.session.commit()
    except MailerError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"Console user {user.id}: password changed; their sessions have ended.")


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


@mailer_cli.command("legacy-address-hash-key")
def legacy_address_hash_key() -> None:
    """Print the address-hash key an install from before MAILER_ADDRESS_HASH_KEY used (derived
    from the first signing key), to set once as MAILER_ADDRESS_HASH_KEY.

    Only when this database was set up with that key: otherwise it prints nothing and exits 1,
    since the printed value would lose every suppression.
    """
    from mailer import installation

    if not installation.is_legacy_install(current_app._get_current_object()):  # type: ignore[attr-defined]
        click.echo("mailer: this database was not set up with a key derived from the first "
                   "key of MAILER_SECRET_KEYS (or it is new); nothing to carry over.", err=True)
        raise SystemExit(1)
    click.echo("Set this once, and keep it as long as the database (README, Deploying):",
               err=True)
    click.echo(installation.legacy_address_hash_key(current_app.config["MAILER_SECRET_KEYS"][0]))


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@mailer_cli.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--smtp-port", default=8025, show_default=True, type=int,
              help="Port of the capture SMTP server (MAILER_SMTP_URL points here by default).")
def dev(host: str, port: int, smtp_port: int) -> None:
    """Web, worker and a capture SMTP server in one process, for a first look."""
    from mailer.devtools.server import serve

    # /dev/mail has no login and lists every confirmation link: this machine only, never
    # a production install.
    if current_app.config.get("ENV_NAME") == "production":
        click.echo("mailer: configuration error: MAILER_ENV is production; `mailer dev` is for "
                   "a first look only (run gunicorn and `mailer worker`)", err=True)
        raise SystemExit(2)
    if not _loopback(host):
        click.echo(f"mailer: `mailer dev --host {host}` refused: its /dev/mail page has no "
                   f"login; use 127.0.0.1, localhost or ::1", err=True)
        raise SystemExit(2)
    _check_installation()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(f"mailer: http://{host}:{port}/ (API /api/v1, captured mail /dev/mail/)")
    serve(app, host, port, smtp_port)


def register(app: Flask) -> None:
    """Attach the command group to the app."""
    app.cli.add_command(mailer_cli)
