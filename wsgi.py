"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`.

A wrong setting stops the process here with one line on standard error naming the setting,
never a traceback: exit status 2 (a usage error, as click reports them), or 4 under gunicorn,
whose master stops on that status ("App failed to load") instead of restarting workers that
can never start.
"""

import sys

from config import ConfigError
from mailer import create_app

try:
    app = create_app()
except ConfigError as exc:
    print(f"mailer: configuration error: {exc}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(4 if "gunicorn" in sys.modules else 2) from None
