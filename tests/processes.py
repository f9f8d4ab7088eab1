"""Running the real `flask --app wsgi ...` commands against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def flask_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that uses the test app's database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        MAILER_SECRET_KEYS=",".join(app.config["MAILER_SECRET_KEYS"]),
        MAILER_ENV="development",
        MAILER_FROM=app.config["MAILER_FROM"],
        MAILER_POSTAL_ADDRESS=app.config["MAILER_POSTAL_ADDRESS"],
    )
    env.update(extra)
    return env


def run_flask(app: Flask, *args: str, stdin: str | None = None,
              **extra: str) -> subprocess.CompletedProcess[str]:
    """Run one command to its end."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env=flask_env(app, **extra), input=stdin, capture_output=True, text=True,
        timeout=120,
    )


def spawn_flask(app: Flask, *args: str, **extra: str) -> subprocess.Popen[str]:
    """Start a long-running command (a worker); the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env=flask_env(app, **extra), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
