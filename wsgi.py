"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from mailer import create_app

app = create_app()
