"""Running the real `flask --app wsgi ...` commands against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def flask_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that uses the test app's database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        MAILER_SECRET_KEYS=",".join(app.config["MAILER_SECRET_KEYS"]),
        MAILER_ADDRESS_HASH_KEY=app.config["MAILER_ADDRESS_HASH_KEY"],
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


class FlaskProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A long-running command whose output (standard output and error together) goes to a
    temporary file, not a pipe: a worker logs a line per delivery, and a pipe nobody reads
    until the end would fill up (64 KiB) and stall it mid-send. `communicate()` waits for the
    exit, answers with the whole output and closes the file; `stdout` is that file (the
    caller closes it when it does not call `communicate()`)."""

    def __init__(self, args: list[str], **kwargs: object) -> None:
        output = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        super().__init__(args, stdout=output, stderr=subprocess.STDOUT, text=True,
                         **kwargs)  # type: ignore[call-overload]
        self.stdout = output

    def communicate(self, input: str | None = None,
                    timeout: float | None = None) -> tuple[str, None]:
        self.wait(timeout)
        if self.stdout is None or self.stdout.closed:
            return "", None
        with self.stdout:
            self.stdout.seek(0)
            return self.stdout.read(), None


def spawn_flask(app: Flask, *args: str, **extra: str) -> FlaskProcess:
    """Start a long-running command (a worker); the caller stops it."""
    return FlaskProcess([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                        cwd=ROOT, env=flask_env(app, **extra))


# The start of a script for run_with_limits: the suite's config with Flask-Limiter on and a
# SQLite file of its own (argv[1]); the script goes on with its own settings and create_app.
LIMITED_APP_CONFIG = """
import json, sys
from config import TestConfig
from mailer import create_app

config = TestConfig.from_env({})
config.MAILER_DATABASE_URL = "sqlite:///" + sys.argv[1]
config.MAILER_SECRET_KEYS = ["rate-limit-test"]
config.MAILER_ADDRESS_HASH_KEY = "rate-limit-test-address-hash-key"
config.MAILER_RATELIMIT_ENABLED = True
"""


def run_with_limits(script: str, database: Path, *args: str) -> dict:
    """Run LIMITED_APP_CONFIG + `script` in a process of its own (the limiter is one object
    per process, and off for the suite's app) and return the last line it prints, as JSON;
    `args` follow the database as argv[2:]."""
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_APP_CONFIG + script, str(database), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
