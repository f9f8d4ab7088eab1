"""Create a PostgreSQL test database if missing: `python -m tests.ensure_postgres URL`."""

from __future__ import annotations

import sys

import psycopg
from sqlalchemy.engine import make_url


def ensure_database(url: str) -> None:
    """Connect to the server's `postgres` database and create the URL's database if missing."""
    parsed = make_url(url)
    name = parsed.database
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


if __name__ == "__main__":
    ensure_database(sys.argv[1])
